//! The packed records of a batch (a records frame): decoding without allocating, and encoding
//! the records a plugin emits.

/// A record, borrowing its bytes from the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    headers: &'a [u8],
    header_count: u64,
}

impl<'a> Record<'a> {
    /// The headers as (name, value) pairs.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        let mut cursor = Cursor {
            bytes: self.headers,
        };
        (0..self.header_count).map_while(move |_| {
            let name = cursor.bytes_field()?;
            let value = cursor.bytes_field()?;
            Some((std::str::from_utf8(name).ok()?, value))
        })
    }

    /// The first header with this name.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

/// The records buffer does not hold what its header announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub offset: u64,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed records buffer at offset {}", self.offset)
    }
}

impl std::error::Error for FrameError {}

/// Iterator over a batch's records.
pub struct Records<'a> {
    cursor: Cursor<'a>,
    next_offset: u64,
    remaining: u32,
}

impl<'a> Records<'a> {
    pub fn new(bytes: &'a [u8], base_offset: u64, count: u32) -> Records<'a> {
        Records {
            cursor: Cursor { bytes },
            next_offset: base_offset,
            remaining: count,
        }
    }

    fn decode(&mut self) -> Option<Record<'a>> {
        let timestamp = unzigzag(self.cursor.varint()?);
        let key = match unzigzag(self.cursor.varint()?) {
            -1 => None,
            len if len >= 0 => Some(self.cursor.take(len as u64)?),
            _ => return None,
        };
        let value = self.cursor.bytes_field()?;
        let header_count = self.cursor.varint()?;
        let start = self.cursor.bytes;
        for _ in 0..header_count {
            // A name that is not UTF-8 makes the record malformed, not a header to skip.
            std::str::from_utf8(self.cursor.bytes_field()?).ok()?;
            self.cursor.bytes_field()?;
        }
        let headers = &start[..start.len() - self.cursor.bytes.len()];
        Some(Record {
            offset: self.next_offset,
            timestamp,
            key,
            value,
            headers,
            header_count,
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let offset = self.next_offset;
        let record = self.decode().ok_or(FrameError { offset });
        self.remaining = if record.is_ok() {
            self.remaining - 1
        } else {
            0
        };
        self.next_offset += 1;
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for (i, &byte) in self.bytes.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[i + 1..];
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, len: u64) -> Option<&'a [u8]> {
        if len > self.bytes.len() as u64 {
            return None;
        }
        let (head, tail) = self.bytes.split_at(len as usize);
        self.bytes = tail;
        Some(head)
    }

    fn bytes_field(&mut self) -> Option<&'a [u8]> {
        let len = self.varint()?;
        self.take(len)
    }
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

pub(crate) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Appends one write to a `state.write-many` frame: `None` deletes the key.
pub fn encode_write(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    varint(out, key.len() as u64);
    out.extend_from_slice(key);
    match value {
        Some(value) => {
            varint(out, value.len() as u64 + 1);
            out.extend_from_slice(value);
        }
        None => varint(out, 0),
    }
}

/// Appends one record (timestamp 0: the engine stamps emitted records) to a frame.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    key: Option<&[u8]>,
    value: &[u8],
    headers: &[(&str, &[u8])],
) {
    encode_record(out, 0, key, value, headers);
}

/// Appends one record to a records frame (the layout of `batch.records` and of
/// `emit.send-frame`, in wit/plugin.wit).
pub fn encode_record(
    out: &mut Vec<u8>,
    timestamp: i64,
    key: Option<&[u8]>,
    value: &[u8],
    headers: &[(&str, &[u8])],
) {
    varint(out, zigzag(timestamp));
    match key {
        None => varint(out, zigzag(-1)),
        Some(key) => {
            varint(out, zigzag(key.len() as i64));
            out.extend_from_slice(key);
        }
    }
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
    varint(out, headers.len() as u64);
    for (name, value) in headers {
        varint(out, name.len() as u64);
        out.extend_from_slice(name.as_bytes());
        varint(out, value.len() as u64);
        out.extend_from_slice(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_records_decode_back() {
        let mut frame = Vec::new();
        encode(&mut frame, Some(b"k"), b"value", &[("h", b"x")]);
        encode(&mut frame, None, b"", &[]);
        let records: Vec<Record> = Records::new(&frame, 0, 2)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(records[0].key, Some(&b"k"[..]));
        assert_eq!(records[0].value, b"value");
        assert_eq!(records[0].header("h"), Some(&b"x"[..]));
        assert_eq!((records[1].key, records[1].value), (None, &b""[..]));
    }

    #[test]
    fn decodes_records_with_and_without_keys_and_headers() {
        let mut frame = Vec::new();
        varint(&mut frame, zigzag(1_700_000_000_000));
        varint(&mut frame, zigzag(1));
        frame.push(b'k');
        varint(&mut frame, 2);
        frame.extend_from_slice(b"v1");
        varint(&mut frame, 1);
        varint(&mut frame, 1);
        frame.push(b'h');
        varint(&mut frame, 1);
        frame.push(b'x');
        varint(&mut frame, zigzag(5));
        varint(&mut frame, zigzag(-1));
        varint(&mut frame, 0);
        varint(&mut frame, 0);
        let records: Vec<Record> = Records::new(&frame, 10, 2)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(records[0].offset, 10);
        assert_eq!(records[0].key, Some(&b"k"[..]));
        assert_eq!(records[0].value, b"v1");
        assert_eq!(records[0].header("h"), Some(&b"x"[..]));
        assert_eq!(
            (
                records[1].offset,
                records[1].timestamp,
                records[1].key,
                records[1].value
            ),
            (11, 5, None, &b""[..])
        );
        assert_eq!(
            Records::new(&frame[..frame.len() - 1], 10, 2).last(),
            Some(Err(FrameError { offset: 11 }))
        );
    }
}
