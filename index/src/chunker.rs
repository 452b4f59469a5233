//! Content-defined chunkers: casync's (for `.caibx`) and PBS's (for `.didx`), and a fixed-size
//! one (for `.fidx`), with iterators that cut a buffer or a reader into chunks.
//!
//! Both content-defined chunkers roll a buzhash over a window of the last bytes and cut where the
//! hash meets a rule, never before the minimum and always at the maximum chunk size. The table
//! and the rules are facts of the formats: cutting the same input with the same sizes gives the
//! same chunks as `casync make` (checked against the real tool in the tests), so cairn and casync
//! deduplicate against each other.
//!
//! A chunker is a pure function from "the bytes from the start of a chunk" to "the chunk's
//! length". It needs no state across calls, so [`Chunker::chunk_len`] reads the window straight
//! from the data and skips the bytes below the minimum size entirely.

use std::io::{self, Read};

use crate::error::{IndexError, Result};

/// Cuts data into chunks.
pub trait Chunker: Send + Sync + std::fmt::Debug {
    /// The largest chunk this chunker makes.
    fn max_size(&self) -> usize;

    /// The length of the chunk that starts at `data[0]`.
    ///
    /// `data` must hold at least [`max_size`](Chunker::max_size) bytes, or else everything up
    /// to the end of the input (the last chunk is then whatever is left, if no cut comes
    /// first). Returns 0 only for empty `data`.
    fn chunk_len(&self, data: &[u8]) -> usize;
}

impl<C: Chunker + ?Sized> Chunker for Box<C> {
    fn max_size(&self) -> usize {
        (**self).max_size()
    }

    fn chunk_len(&self, data: &[u8]) -> usize {
        (**self).chunk_len(data)
    }
}

/// The largest chunk any chunker here makes: 128 MiB, the most a PBS DataBlob (and casync) holds.
pub const MAX_CHUNK_SIZE: usize = 128 * 1024 * 1024;

/// The window of casync's chunker.
pub const CASYNC_WINDOW: usize = 48;
/// The window of PBS's chunker.
pub const PBS_WINDOW: usize = 64;

/// casync's buzhash table (PBS uses the same): one pseudo-random word per byte value.
#[rustfmt::skip]
pub(crate) const BUZHASH_TABLE: [u32; 256] = [
    0x458b_e752, 0xc107_48cc, 0xfbbc_dbb8, 0x6ded_5b68, 0xb10a_82b5, 0x20d7_5648, 0xdfc5_665f, 0xa842_8801,
    0x7ebf_5191, 0x8411_35c7, 0x65cc_53b3, 0x280a_597c, 0x16f6_0255, 0xc78c_bc3e, 0x2944_15f5, 0xb938_d494,
    0xec85_c4e6, 0xb7d3_3edc, 0xe549_b544, 0xfded_a5aa, 0x882b_f287, 0x3116_737c, 0x0556_9956, 0xe8cc_1f68,
    0x0806_ac5e, 0x22a1_4443, 0x1529_7e10, 0x50d0_90e7, 0x4ba6_0f6f, 0xefd9_f1a7, 0x5c5c_885c, 0x8248_2f93,
    0x9bfd_7c64, 0x0b3e_7276, 0xf268_8e77, 0x8fad_8abc, 0xb050_9568, 0xf1ad_a29f, 0xa53e_fdfe, 0xcb2b_1d00,
    0xf2a9_e986, 0x6463_432b, 0x9509_4051, 0x5a22_3ad2, 0x9be8_401b, 0x61e5_79cb, 0x1a55_6a14, 0x5840_fdc2,
    0x9261_ddf6, 0xcde0_02bb, 0x5243_2bb0, 0xbf17_373e, 0x7b7c_222f, 0x2955_ed16, 0x9f10_ca59, 0xe840_c4c9,
    0xccab_d806, 0x1454_3f34, 0x1462_417a, 0x0d4a_1f9c, 0x087e_d925, 0xd7f8_f24c, 0x7338_c425, 0xcf86_c8f5,
    0xb191_65cd, 0x9891_c393, 0x3253_84ac, 0x0308_459d, 0x8614_1d7e, 0xc922_116a, 0xe2ff_a6b6, 0x53f5_2aed,
    0x2cd8_6197, 0xf5b9_f498, 0xbf31_9c8f, 0xe041_1fae, 0x977e_b18c, 0xd877_0976, 0x9833_466a, 0xc674_df7f,
    0x8c29_7d45, 0x8ca4_8d26, 0xc49e_d8e2, 0x7344_f874, 0x556f_79c7, 0x6b25_eaed, 0xa03e_2b42, 0xf68f_66a4,
    0x8e8b_09a2, 0xf2e0_e62a, 0x0d3a_9806, 0x9729_e493, 0x8c72_b0fc, 0x160b_94f6, 0x450e_4d3d, 0x7a32_0e85,
    0xbef8_f0e1, 0x21d7_3653, 0x4e3d_977a, 0x1e7b_3929, 0x1cc6_c719, 0xbe47_8d53, 0x8d75_2809, 0xe6d8_c2c6,
    0x275f_0892, 0xc8ac_c273, 0x4cc2_1580, 0xecc4_a617, 0xf5f7_be70, 0xe795_248a, 0x375a_2fe9, 0x4255_70b6,
    0x8898_dcf8, 0xdc2d_97c4, 0x0106_114b, 0x364d_c22f, 0x1e0c_ad1f, 0xbe63_803c, 0x5f69_fac2, 0x4d5a_fa6f,
    0x1bc0_dfb5, 0xfb27_3589, 0x0ea4_7f7b, 0x3c1c_2b50, 0x21b2_a932, 0x6b12_23fd, 0x2fe7_06a8, 0xf9bd_6ce2,
    0xa268_e64e, 0xe987_f486, 0x3eac_f563, 0x1ca2_018c, 0x65e1_8228, 0x2207_360a, 0x57cf_1715, 0x34c3_7d2b,
    0x1f8f_3cde, 0x93b6_57cf, 0x31a0_19fd, 0xe69e_b729, 0x8bca_7b9b, 0x4c9d_5bed, 0x277e_beaf, 0xe0d8_f8ae,
    0xd150_821c, 0x3138_1871, 0xafc3_f1b0, 0x927d_b328, 0xe95e_ffac, 0x305a_47bd, 0x426b_a35b, 0x1233_af3f,
    0x686a_5b83, 0x50e0_72e5, 0xd9d3_bb2a, 0x8bef_c475, 0x487f_0de6, 0xc88d_ff89, 0xbd66_4d5e, 0x971b_5d18,
    0x63b1_4847, 0xd7d3_c1ce, 0x7f58_3cf3, 0x72cb_cb09, 0xc0d0_a81c, 0x7fa3_429b, 0xe915_8a1b, 0x225e_a19a,
    0xd8ca_9ea3, 0xc763_b282, 0xbb0c_6341, 0x020b_8293, 0xd4cd_299d, 0x58cf_a7f8, 0x91b4_ee53, 0x37e4_d140,
    0x95ec_764c, 0x30f7_6b06, 0x5ee6_8d24, 0x679c_8661, 0xa419_79c2, 0xf2b6_1284, 0x4fac_1475, 0x0adb_49f9,
    0x1972_7a23, 0x15a7_e374, 0xc43a_18d5, 0x3fb1_aa73, 0x342f_c615, 0x924c_0793, 0xbee2_d7f0, 0x8a27_9de9,
    0x4aa2_d70c, 0xe24d_d37f, 0xbe86_2c0b, 0x177c_22c2, 0x5388_e5ee, 0xcd8a_7510, 0xf901_b4fd, 0xdbc1_3dbc,
    0x6c0b_ae5b, 0x64ef_e8c7, 0x48b0_2079, 0x8033_1a49, 0xca3d_8ae6, 0xf354_6190, 0xfed7_108b, 0xc49b_941b,
    0x32ba_f4a9, 0xeb83_3a4a, 0x88a3_f1a5, 0x3a91_ce0a, 0x3cc2_7da1, 0x7112_e684, 0x4a30_96b1, 0x3794_574c,
    0xa3c8_b6f3, 0x1d21_3941, 0x6e0a_2e00, 0x2334_79f1, 0x0f4c_d82f, 0x6093_edd2, 0x5d7d_209e, 0x464f_e319,
    0xd4dc_ac9e, 0x0db8_45cb, 0xfb5e_4bc3, 0xe025_6ce1, 0x09fb_4ed1, 0x0914_be1e, 0xa5bd_b2c3, 0xc6eb_57bb,
    0x3032_0350, 0x3f39_7e91, 0xa677_91bc, 0x86bc_0e2c, 0xefa0_a7e2, 0xe9ff_7543, 0xe733_612c, 0xd185_897b,
    0x329e_5388, 0x91dd_236b, 0x2ecb_0d93, 0xf4d8_2a3d, 0x35b5_c03f, 0xe4e6_06f0, 0x05b2_1843, 0x37b4_5964,
    0x5eff_22f4, 0x6027_f4cc, 0x7717_8b3c, 0xae50_7131, 0x7bf7_cabc, 0xf9c1_8d66, 0x593a_de65, 0xd95d_df11,
];

/// The table with each entry rotated left by `rotation`: the contribution of the byte leaving
/// a window of `rotation` (mod 32) bytes.
const fn rotated_table(rotation: u32) -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = BUZHASH_TABLE[i].rotate_left(rotation);
        i += 1;
    }
    table
}

/// What leaves casync's 48-byte window: entries rotated by 48 mod 32 = 16.
static LEAVE_48: [u32; 256] = rotated_table((CASYNC_WINDOW % 32) as u32);
/// What leaves PBS's 64-byte window: rotated by 64 mod 32 = 0, the table itself.
static LEAVE_64: [u32; 256] = rotated_table((PBS_WINDOW % 32) as u32);

/// The buzhash of a whole window: each byte's entry rotated by its distance from the end.
fn window_hash(window: &[u8]) -> u32 {
    window.iter().fold(0u32, |h, &b| {
        h.rotate_left(1) ^ BUZHASH_TABLE[usize::from(b)]
    })
}

/// The shared scan: the first cut at or after `first` (which is at least the window), at most
/// `max`, or the end of `data`.
#[inline(always)]
fn scan<const WINDOW: usize>(
    data: &[u8],
    first: usize,
    max: usize,
    leave: &[u32; 256],
    cuts: impl Fn(u32) -> bool,
) -> usize {
    debug_assert!(first >= WINDOW && first <= max);
    if data.len() <= first {
        return data.len();
    }
    let end = data.len().min(max);
    let mut hash = window_hash(&data[first - WINDOW..first]);
    if cuts(hash) || first == max {
        return first;
    }
    // `entering` and `leaving` walk the data WINDOW bytes apart. Four bytes per round: the cut
    // tests of a round are independent of each other, so they overlap in the pipeline.
    let entering = &data[first..end];
    let leaving = &data[first - WINDOW..end - WINDOW];
    let roll = |hash: u32, left: u8, enter: u8| {
        // The two table entries do not depend on the hash: combine them first so the chain
        // from one hash to the next is one rotate and one xor.
        hash.rotate_left(1) ^ (leave[usize::from(left)] ^ BUZHASH_TABLE[usize::from(enter)])
    };
    let mut at = 0;
    for (enter, left) in entering.chunks_exact(4).zip(leaving.chunks_exact(4)) {
        let h1 = roll(hash, left[0], enter[0]);
        let h2 = roll(h1, left[1], enter[1]);
        let h3 = roll(h2, left[2], enter[2]);
        let h4 = roll(h3, left[3], enter[3]);
        if cuts(h1) | cuts(h2) | cuts(h3) | cuts(h4) {
            // Rare: find which of the four cut first.
            for (offset, h) in [h1, h2, h3, h4].into_iter().enumerate() {
                if cuts(h) {
                    return first + at + offset + 1;
                }
            }
        }
        hash = h4;
        at += 4;
    }
    for (&enter, &left) in entering[at..].iter().zip(&leaving[at..]) {
        hash = roll(hash, left, enter);
        at += 1;
        if cuts(hash) {
            return first + at;
        }
    }
    end
}

/// casync's chunker: buzhash over 48 bytes; cut where `hash mod d == d - 1`, with the
/// discriminator `d` derived from the average size as casync does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasyncChunker {
    min: usize,
    avg: usize,
    max: usize,
    discriminator: u32,
    /// `ceil(2^64 / discriminator)`, for a divisibility test by multiplication.
    inverse: u64,
}

/// casync's smallest and largest allowed chunk sizes.
const CASYNC_LIMIT_MIN: usize = 1;
const CASYNC_LIMIT_MAX: usize = MAX_CHUNK_SIZE;

impl CasyncChunker {
    /// casync's defaults: min 16 KiB, avg 64 KiB, max 256 KiB.
    pub const DEFAULT_AVG: usize = 64 * 1024;

    /// A chunker with casync's defaults.
    #[must_use]
    pub fn casync_default() -> Self {
        Self::from_valid(
            Self::DEFAULT_AVG / 4,
            Self::DEFAULT_AVG,
            Self::DEFAULT_AVG * 4,
        )
    }

    /// What `casync make --chunk-size=AVG` uses: min avg/4, max 4·avg (within casync's limits).
    ///
    /// # Errors
    /// [`IndexError::ChunkerSizes`] if `avg` is outside casync's limits or the maximum would
    /// be smaller than the 48-byte window.
    pub fn with_avg(avg: usize) -> Result<Self> {
        let min = (avg / 4).max(CASYNC_LIMIT_MIN);
        let max = avg.saturating_mul(4).min(CASYNC_LIMIT_MAX);
        Self::new(min, avg, max)
    }

    /// A chunker with explicit sizes.
    ///
    /// # Errors
    /// [`IndexError::ChunkerSizes`] unless `1 <= min <= avg <= max <= 128 MiB` and
    /// `max >= 48` (the window).
    pub fn new(min: usize, avg: usize, max: usize) -> Result<Self> {
        let ordered = CASYNC_LIMIT_MIN <= min && min <= avg && avg <= max;
        if !ordered || !(CASYNC_WINDOW..=CASYNC_LIMIT_MAX).contains(&max) {
            return Err(IndexError::ChunkerSizes {
                chunker: "casync",
                problem: format!(
                    "sizes min {min}, avg {avg}, max {max} must satisfy 1 <= min <= avg <= max, \
                     with max from {CASYNC_WINDOW} (the window) to {CASYNC_LIMIT_MAX} (128 MiB)"
                ),
            });
        }
        Ok(Self::from_valid(min, avg, max))
    }

    fn from_valid(min: usize, avg: usize, max: usize) -> Self {
        let discriminator = Self::discriminator_for(avg).clamp(min, max);
        let discriminator = u32::try_from(discriminator).unwrap_or(u32::MAX);
        let inverse = (u64::MAX / u64::from(discriminator)).wrapping_add(1);
        Self {
            min,
            avg,
            max,
            discriminator,
            inverse,
        }
    }

    /// casync's discriminator for an average size: the average corrected for the skew of the
    /// chunk size distribution, in floating point as casync computes it.
    #[must_use]
    pub fn discriminator_for(avg: usize) -> usize {
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let d = (avg as f64 / (-1.428_888_52e-7 * avg as f64 + 1.332_375_15)) as usize;
        d
    }

    /// The sizes: (min, avg, max).
    #[must_use]
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.min, self.avg, self.max)
    }

    /// The discriminator in use.
    #[must_use]
    pub fn discriminator(&self) -> u32 {
        self.discriminator
    }

    /// casync's cut rule, `hash % d == d - 1`, as "`hash + 1` is divisible by `d`", tested by one
    /// multiplication instead of a division (Lemire, Kaser and Kurz, "Faster remainder by direct
    /// computation", 2019): `n` is divisible by `d` iff `n * ceil(2^64 / d) mod 2^64 <
    /// ceil(2^64 / d)`. That holds for every `n < 2^N` when `N + log2(d) <= 64`; here `n <= 2^32`
    /// (33 bits) and `d <= 128 MiB` (27 bits).
    #[cfg(test)]
    fn cuts(&self, hash: u32) -> bool {
        cuts_with(self.inverse, hash)
    }

    /// The cut rule computed the slow way, for tests.
    #[cfg(test)]
    fn cuts_by_division(&self, hash: u32) -> bool {
        hash % self.discriminator == self.discriminator - 1
    }
}

/// See [`CasyncChunker::cuts`]. With `x = hash * c mod 2^64`, `(hash + 1) * c mod 2^64 < c`
/// holds exactly when `x + c` wraps, that is when `x >= 2^64 - c`: one multiply and one compare.
#[inline(always)]
fn cuts_with(inverse: u64, hash: u32) -> bool {
    u64::from(hash).wrapping_mul(inverse) >= inverse.wrapping_neg()
}

impl Default for CasyncChunker {
    fn default() -> Self {
        Self::casync_default()
    }
}

impl Chunker for CasyncChunker {
    fn max_size(&self) -> usize {
        self.max
    }

    fn chunk_len(&self, data: &[u8]) -> usize {
        if self.min == self.max {
            // casync's fixed-size mode.
            return data.len().min(self.max);
        }
        // casync checks once the window is full, and not below the minimum.
        let first = self.min.max(CASYNC_WINDOW);
        let inverse = self.inverse;
        scan::<CASYNC_WINDOW>(data, first, self.max, &LEAVE_48, move |h| {
            cuts_with(inverse, h)
        })
    }
}

/// PBS's chunker: buzhash over 64 bytes; cut where `hash & (2·avg − 1) >= 2·avg − 3`; min avg/4,
/// max 4·avg; the average a power of two (4 MiB by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PbsChunker {
    avg: usize,
    mask: u32,
    minimum: u32,
}

impl PbsChunker {
    /// PBS's default average chunk size.
    pub const DEFAULT_AVG: usize = 4 * 1024 * 1024;

    /// The largest average: its chunks of up to four times the average must fit in 128 MiB.
    pub const MAX_AVG: usize = MAX_CHUNK_SIZE / 4;

    /// A chunker of average size `avg`.
    ///
    /// # Errors
    /// [`IndexError::ChunkerSizes`] unless `avg` is a power of two from 256 bytes to
    /// [`MAX_AVG`](PbsChunker::MAX_AVG) (32 MiB), so that no chunk exceeds 128 MiB.
    pub fn new(avg: usize) -> Result<Self> {
        if !avg.is_power_of_two() || avg < 256 {
            return Err(IndexError::ChunkerSizes {
                chunker: "PBS",
                problem: format!(
                    "average chunk size {avg} is not a power of two from 256 to {}",
                    Self::MAX_AVG
                ),
            });
        }
        if avg > Self::MAX_AVG {
            return Err(IndexError::ChunkerSizes {
                chunker: "PBS",
                problem: format!(
                    "average chunk size {avg} makes chunks of up to {} bytes, over the limit of \
                     {MAX_CHUNK_SIZE} (128 MiB) a chunk may have; the largest average is {} (32 MiB)",
                    avg.saturating_mul(4),
                    Self::MAX_AVG
                ),
            });
        }
        let mask = u32::try_from(avg * 2 - 1).unwrap_or(u32::MAX);
        Ok(Self {
            avg,
            mask,
            minimum: mask - 2,
        })
    }

    /// The sizes: (min, avg, max).
    #[must_use]
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.avg / 4, self.avg, self.avg * 4)
    }
}

impl Default for PbsChunker {
    fn default() -> Self {
        Self {
            avg: Self::DEFAULT_AVG,
            mask: (Self::DEFAULT_AVG * 2 - 1) as u32,
            minimum: (Self::DEFAULT_AVG * 2 - 3) as u32,
        }
    }
}

impl Chunker for PbsChunker {
    fn max_size(&self) -> usize {
        self.avg * 4
    }

    fn chunk_len(&self, data: &[u8]) -> usize {
        // PBS tests only after the first roll past a full window, and not below the minimum.
        let first = (self.avg / 4).max(PBS_WINDOW + 1);
        let (mask, minimum) = (self.mask, self.minimum);
        scan::<PBS_WINDOW>(data, first, self.max_size(), &LEAVE_64, |h| {
            h & mask >= minimum
        })
    }
}

/// Equal chunks of a fixed size (the last may be short), as in a `.fidx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedChunker {
    size: usize,
}

impl FixedChunker {
    /// Chunks of `size` bytes.
    ///
    /// # Errors
    /// [`IndexError::ChunkerSizes`] unless `size` is a power of two (as a `.fidx` requires) of
    /// at most [`MAX_CHUNK_SIZE`] (128 MiB).
    pub fn new(size: usize) -> Result<Self> {
        if !size.is_power_of_two() {
            return Err(IndexError::ChunkerSizes {
                chunker: "fixed",
                problem: format!("chunk size {size} is not a power of two"),
            });
        }
        if size > MAX_CHUNK_SIZE {
            return Err(IndexError::ChunkerSizes {
                chunker: "fixed",
                problem: format!(
                    "chunk size {size} is over the limit of {MAX_CHUNK_SIZE} (128 MiB) a chunk may have"
                ),
            });
        }
        Ok(Self { size })
    }
}

impl Chunker for FixedChunker {
    fn max_size(&self) -> usize {
        self.size
    }

    fn chunk_len(&self, data: &[u8]) -> usize {
        data.len().min(self.size)
    }
}

/// The chunks of a buffer held in memory, as slices of it.
#[derive(Debug, Clone)]
pub struct SliceChunks<'a, C> {
    chunker: C,
    rest: &'a [u8],
}

impl<'a, C: Chunker> SliceChunks<'a, C> {
    /// Cuts `data` with `chunker`.
    pub fn new(chunker: C, data: &'a [u8]) -> Self {
        Self {
            chunker,
            rest: data,
        }
    }
}

impl<'a, C: Chunker> Iterator for SliceChunks<'a, C> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let len = self.chunker.chunk_len(self.rest).clamp(1, self.rest.len());
        let (chunk, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(chunk)
    }
}

/// The chunks of a reader, each an owned buffer; reads ahead at most twice the largest chunk.
#[derive(Debug)]
pub struct ReadChunks<R, C> {
    reader: R,
    chunker: C,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    failed: bool,
}

impl<R: Read, C: Chunker> ReadChunks<R, C> {
    /// Cuts what `reader` yields with `chunker`.
    pub fn new(reader: R, chunker: C) -> Self {
        let capacity = chunker.max_size().saturating_mul(2).max(1 << 16);
        Self {
            reader,
            chunker,
            buffer: vec![0; capacity],
            start: 0,
            end: 0,
            eof: false,
            failed: false,
        }
    }

    /// Reads until a whole largest chunk is buffered or the input ends.
    fn fill(&mut self) -> io::Result<()> {
        let want = self.chunker.max_size();
        if self.buffer.len() - self.start < want {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end - self.start < want {
            match self.reader.read(&mut self.buffer[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read, C: Chunker> Iterator for ReadChunks<R, C> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<io::Result<Vec<u8>>> {
        if self.failed {
            return None;
        }
        if let Err(e) = self.fill() {
            self.failed = true;
            return Some(Err(e));
        }
        let available = &self.buffer[self.start..self.end];
        if available.is_empty() {
            return None;
        }
        let len = self.chunker.chunk_len(available).clamp(1, available.len());
        let chunk = available[..len].to_vec();
        self.start += len;
        Some(Ok(chunk))
    }
}

#[cfg(test)]
mod tests;
