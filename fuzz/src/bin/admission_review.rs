//! AFL++ binary of `remora_fuzz::admission_review`.
fn main() {
    afl::fuzz!(|data: &[u8]| remora_fuzz::admission_review(data));
}
