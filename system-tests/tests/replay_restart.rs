//! `apex replay-server` as a process: SIGTERM leaves a checkpoint that the
//! next start restores; kill -9 loses only what came after the last
//! checkpoint; a damaged checkpoint is moved aside and the one before it
//! used, so the server starts instead of failing again and again.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::{
    CheckpointRequest, Codec, Frame, InfoRequest, InfoResponse, InsertRequest, Shape, Transition,
};
use tonic::transport::Channel;

struct Server {
    child: Child,
    client: ReplayClient<Channel>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(dir: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(apex_system_tests::apex_bin())
        .args(["replay-server", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--checkpoint-dir", dir.to_str().unwrap()])
        .args(["--capacity", "10000", "--min-size", "1"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env_remove("APEX_PRESET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if let Ok(client) = ReplayClient::connect(addr.clone()).await {
            return Server { child, client };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the replay server did not come up on {addr}");
}

/// `n` one-step transitions on a new stream; observations are 2 frames of 3 bytes.
async fn insert(s: &mut Server, n: u64) {
    let request = InsertRequest {
        obs_shape: Some(Shape::of(&[2, 3])),
        codec: Codec::Zstd as i32,
        num_actions: 1024,
        frames: (0..n + 2)
            .map(|id| Frame {
                id,
                data: Codec::Zstd.encode(&[id as u8; 3]).into(),
            })
            .collect(),
        transitions: (0..n)
            .map(|t| Transition {
                obs: vec![t, t + 1],
                next_obs: vec![t + 1, t + 2],
                action: t as u32,
                reward: 1.0,
                discount: 0.99,
                priority: 1.0,
            })
            .collect(),
        actor_id: 0,
        ..Default::default()
    };
    let mut answers = s
        .client
        .insert(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    answers.message().await.unwrap().unwrap();
}

async fn info(s: &mut Server) -> InfoResponse {
    s.client
        .info(InfoRequest::default())
        .await
        .unwrap()
        .into_inner()
}

async fn checkpoint(s: &mut Server) {
    s.client.checkpoint(CheckpointRequest {}).await.unwrap();
}

fn kill_9(mut s: Server) {
    s.child.kill().unwrap(); // SIGKILL: no shutdown checkpoint
    s.child.wait().unwrap();
}

#[tokio::test]
async fn checkpoints_survive_kills_and_damage() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path()).await;
    insert(&mut s, 300).await;
    checkpoint(&mut s).await;
    insert(&mut s, 200).await;
    checkpoint(&mut s).await;
    insert(&mut s, 100).await; // after the last checkpoint: lost to kill -9
    kill_9(s);

    let mut s = start(dir.path()).await;
    let i = info(&mut s).await;
    assert_eq!((i.size, i.inserted_total), (500, 500));
    assert_eq!(i.obs_shape.unwrap().dims, vec![2, 3]);
    kill_9(s);

    // A truncated checkpoint: moved aside, the one before restored.
    let current = dir.path().join("replay.ckpt");
    let bytes = std::fs::read(&current).unwrap();
    std::fs::write(&current, &bytes[..bytes.len() / 2]).unwrap();
    let mut s = start(dir.path()).await;
    let i = info(&mut s).await;
    assert_eq!((i.size, i.inserted_total), (300, 300));
    let aside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("corrupt"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");

    // SIGTERM: a checkpoint on the way out, restored on the next start.
    insert(&mut s, 50).await;
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = s.child.wait().unwrap();
    assert!(status.success(), "a clean exit on SIGTERM: {status}");
    drop(s);
    let mut s = start(dir.path()).await;
    let i = info(&mut s).await;
    assert_eq!((i.size, i.inserted_total), (350, 350));
}
