"""Plays a list of actions through ale-py + gymnasium's AtariPreprocessing, the
implementation apex's environment is checked against, and saves its frames.

Settings: ALE/<Game>-v5 with frameskip=1 and repeat_action_probability=0,
AtariPreprocessing(noop_max=0, frame_skip=4, screen_size=84, grayscale,
terminal_on_life_loss=False); reset after every game over, as `apex env record` does.
"""

import argparse

import ale_py
import gymnasium as gym
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--game", default="breakout")
    parser.add_argument("--actions", required=True, help="one action index per line")
    parser.add_argument("--out", required=True, help="prefix: writes PREFIX.npy and PREFIX.csv")
    args = parser.parse_args()

    gym.register_envs(ale_py)
    name = "".join(word.capitalize() for word in args.game.split("_"))
    env = gym.make(f"ALE/{name}-v5", frameskip=1, repeat_action_probability=0.0, full_action_space=False)
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=0, frame_skip=4, screen_size=84, grayscale_obs=True, terminal_on_life_loss=False
    )
    actions = [int(line) for line in open(args.actions) if line.strip()]
    obs, _ = env.reset(seed=0)
    frames = [obs]
    rows = []
    for step, action in enumerate(actions, start=1):
        obs, reward, terminated, truncated, info = env.step(action)
        frames.append(obs)
        rows.append(f"{step},{action},{int(reward)},{int(terminated)},{int(truncated)},{info['lives']}")
        if terminated or truncated:
            obs, _ = env.reset()
    np.save(args.out + ".npy", np.stack(frames).astype(np.uint8))
    with open(args.out + ".csv", "w") as f:
        f.write("step,action,raw_reward,terminal,truncated,lives\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
