//! Produced batches decompressed within a bound: a compressed batch may announce or expand to
//! any size (a "decompression bomb"), so each is read only up to
//! [`DECOMPRESSED_BATCH_BYTES_MAX`] and refused past it, before more memory is taken. The
//! codecs are Kafka's: gzip, snappy (xerial's framing, or raw), lz4 (frames) and zstd.

use std::io::Read;

use bytes::Bytes;
use kafka_protocol::records::Compression;

/// Bytes a produced batch may decompress to.
pub(super) const DECOMPRESSED_BATCH_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// The magic of xerial's snappy framing, which Kafka's clients write.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
/// Bytes of xerial's header: the magic, a version and a compatible version.
const XERIAL_HEADER_LEN: usize = 16;

/// Decompresses a batch's records within [`DECOMPRESSED_BATCH_BYTES_MAX`].
pub(super) fn bounded(data: &mut Bytes, compression: Compression) -> anyhow::Result<Bytes> {
    let compressed = std::mem::take(data);
    match compression {
        Compression::None => Ok(compressed),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(&compressed[..])),
        Compression::Zstd => read_bounded(zstd::stream::read::Decoder::new(&compressed[..])?),
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(&compressed[..])),
        Compression::Snappy => snappy(&compressed),
    }
}

fn read_bounded(reader: impl Read) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    reader
        .take(DECOMPRESSED_BATCH_BYTES_MAX + 1)
        .read_to_end(&mut out)?;
    anyhow::ensure!(
        out.len() as u64 <= DECOMPRESSED_BATCH_BYTES_MAX,
        "the batch decompresses to more than {DECOMPRESSED_BATCH_BYTES_MAX} bytes"
    );
    Ok(Bytes::from(out))
}

/// Snappy: xerial's framing (blocks, each with its length) when it has the magic, else one
/// raw block, as the Java client reads it. A block's announced length is checked against what
/// is left of the bound before anything is allocated for it.
fn snappy(compressed: &[u8]) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    let mut blocks: Vec<&[u8]> = Vec::new();
    if compressed.starts_with(XERIAL_MAGIC) && compressed.len() >= XERIAL_HEADER_LEN {
        let mut rest = &compressed[XERIAL_HEADER_LEN..];
        while !rest.is_empty() {
            anyhow::ensure!(rest.len() >= 4, "a snappy block's length is cut short");
            let length = u32::from_be_bytes(rest[..4].try_into()?) as usize;
            anyhow::ensure!(rest.len() - 4 >= length, "a snappy block is cut short");
            blocks.push(&rest[4..4 + length]);
            rest = &rest[4 + length..];
        }
    } else {
        blocks.push(compressed);
    }
    let mut decoder = snap::raw::Decoder::new();
    for block in blocks {
        let length = snap::raw::decompress_len(block)?;
        anyhow::ensure!(
            (out.len() + length) as u64 <= DECOMPRESSED_BATCH_BYTES_MAX,
            "the batch decompresses to more than {DECOMPRESSED_BATCH_BYTES_MAX} bytes"
        );
        let start = out.len();
        out.resize(start + length, 0);
        decoder.decompress(block, &mut out[start..])?;
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A batch that decompresses past the bound is refused, with what was read bounded.
    #[test]
    fn a_decompression_bomb_is_refused() {
        let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(DECOMPRESSED_BATCH_BYTES_MAX >> 20) + 1 {
            encoder.write_all(&zeros).unwrap();
        }
        let mut bomb = Bytes::from(encoder.finish().unwrap());
        assert!(bomb.len() < 1 << 20, "{} bytes compressed", bomb.len());
        let error = bounded(&mut bomb, Compression::Zstd).unwrap_err();
        assert!(
            error.to_string().contains("decompresses to more than"),
            "{error}"
        );
    }

    /// A snappy block announcing four GiB is refused before anything is allocated for it.
    #[test]
    fn a_snappy_block_announcing_too_much_is_refused() {
        let mut announced = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]);
        let error = bounded(&mut announced, Compression::Snappy).unwrap_err();
        assert!(
            error.to_string().contains("decompresses to more than"),
            "{error}"
        );
    }

    /// What a real client compresses reads back the same, in every codec.
    #[test]
    fn every_codec_reads_back() {
        let plain = Bytes::from_static(b"records of a batch, records of a batch, records");
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(&plain).unwrap();
        let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz4.write_all(&plain).unwrap();
        let raw_snappy = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        xerial.extend_from_slice(&(raw_snappy.len() as u32).to_be_bytes());
        xerial.extend_from_slice(&raw_snappy);
        let cases = [
            (Compression::Gzip, gzip.finish().unwrap()),
            (Compression::Zstd, zstd::encode_all(&plain[..], 3).unwrap()),
            (Compression::Lz4, lz4.finish().unwrap()),
            (Compression::Snappy, raw_snappy.clone()),
            (Compression::Snappy, xerial),
        ];
        for (codec, compressed) in cases {
            let mut data = Bytes::from(compressed);
            assert_eq!(bounded(&mut data, codec).unwrap(), plain, "{codec:?}");
        }
    }
}
