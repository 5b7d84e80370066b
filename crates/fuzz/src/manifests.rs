//! Manifest decoding as local mode does it, and `validate()` of both CRDs.

use std::path::Path;

use remora_api::{FieldError, Validate};
use remora_inputs::{Loaded, load_text};
use remora_model::input::Object;

/// Bytes as a manifest file: every document decoded by `load_text`, every `SidecarPolicy`
/// and `TrafficRoute` that decoded checked with `validate()`. Every problem names a field.
pub fn manifests(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut loaded = Loaded::default();
    load_text(Path::new("fuzz.yaml"), text, 0, &mut loaded);
    for object in &loaded.objects {
        let checked = match object {
            Object::SidecarPolicy(policy) => policy.validate(),
            Object::TrafficRoute(route) => route.validate(),
            _ => continue,
        };
        if let Err(errors) = checked {
            assert!(
                !errors.0.is_empty(),
                "a failed validation lists its problems"
            );
            errors.0.iter().for_each(names_a_field);
        }
    }
}

fn names_a_field(e: &FieldError) {
    assert!(!e.path.is_empty(), "a problem without a field: {e}");
}
