//! AFL++ binary of `remora_fuzz::grpc_frames`.
fn main() {
    afl::fuzz!(|data: &[u8]| remora_fuzz::grpc_frames(data));
}
