//! AFL++ binary of `remora_fuzz::sotw`.
fn main() {
    afl::fuzz!(|data: &[u8]| remora_fuzz::sotw(data));
}
