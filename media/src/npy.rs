//! Minimal NumPy `.npy` (format 1.0) reading and writing for uint8 arrays,
//! so people can `np.load` what the recorder saw.

use std::io::{self, Read, Write};

/// Writes the header of a C-ordered uint8 array of `shape`; the caller then
/// writes exactly `shape.iter().product()` bytes.
pub fn write_u8_header(out: &mut impl Write, shape: &[usize]) -> io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut dict = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic (6) + version (2) + length (2) + dict + newline, padded to 64 bytes.
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    dict.push('\n');
    out.write_all(b"\x93NUMPY\x01\x00")?;
    out.write_all(&(dict.len() as u16).to_le_bytes())?;
    out.write_all(dict.as_bytes())
}

/// Reads a C-ordered uint8 `.npy`: its shape and data.
pub fn read_u8(mut input: impl Read) -> io::Result<(Vec<usize>, Vec<u8>)> {
    let bad = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a uint8 .npy file: {what}"),
        )
    };
    let mut head = [0u8; 10];
    input.read_exact(&mut head)?;
    if &head[..6] != b"\x93NUMPY" || head[6] != 1 {
        return Err(bad("expected a version 1 npy magic"));
    }
    let len = u16::from_le_bytes([head[8], head[9]]) as usize;
    let mut dict = vec![0u8; len];
    input.read_exact(&mut dict)?;
    let dict = String::from_utf8(dict).map_err(|_| bad("header is not text"))?;
    if !dict.contains("'descr': '|u1'") || !dict.contains("'fortran_order': False") {
        return Err(bad("dtype must be |u1 in C order"));
    }
    let shape_text = dict
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad("shape is not integers")))
        .collect::<io::Result<Vec<_>>>()?;
    let mut data = Vec::with_capacity(shape.iter().product());
    input.read_to_end(&mut data)?;
    if data.len() != shape.iter().product::<usize>() {
        return Err(bad("data length does not match the shape"));
    }
    Ok((shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_alignment() {
        for shape in [vec![3usize, 2, 2], vec![5], vec![1, 84, 84]] {
            let n: usize = shape.iter().product();
            let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut buf = Vec::new();
            write_u8_header(&mut buf, &shape).unwrap();
            assert_eq!(buf.len() % 64, 0);
            buf.extend_from_slice(&data);
            let (s, d) = read_u8(&buf[..]).unwrap();
            assert_eq!((s, d), (shape, data));
        }
    }

    #[test]
    fn truncated_data_is_an_error() {
        let mut buf = Vec::new();
        write_u8_header(&mut buf, &[4]).unwrap();
        buf.extend_from_slice(&[1, 2]);
        assert!(read_u8(&buf[..]).is_err());
    }
}
