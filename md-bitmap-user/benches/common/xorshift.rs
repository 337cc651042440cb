//! The synthetic workloads' generator, shared by the benches that build traces (xorshift64:
//! deterministic, so every run replays the same writes).

/// xorshift64 from a fixed seed.
pub struct XorShift(u64);

impl XorShift {
    /// The generator every bench starts from.
    pub fn new() -> Self {
        XorShift(0x9e37_79b9_7f4a_7c15)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
