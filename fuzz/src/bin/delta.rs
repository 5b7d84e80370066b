//! AFL++ binary of `remora_fuzz::delta`.
fn main() {
    afl::fuzz!(|data: &[u8]| remora_fuzz::delta(data));
}
