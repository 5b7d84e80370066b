//! The model shared between the task that applies cluster events and the readers beside it
//! (the admin API's config dump, status computation).

use std::sync::{Mutex, MutexGuard};

use remora_admin::ConfigSource;
use remora_model::{Mesh, input::ObjectKey};

/// The model behind a mutex, shared by the task that applies events and its readers.
pub struct SharedMesh(Mutex<Mesh>);

impl SharedMesh {
    /// Shares `mesh`.
    pub fn new(mesh: Mesh) -> SharedMesh {
        SharedMesh(Mutex::new(mesh))
    }

    /// The model. A panic while it was held is a bug the logs show; readers then get the
    /// last state rather than a second panic.
    pub fn lock(&self) -> MutexGuard<'_, Mesh> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ConfigSource for SharedMesh {
    fn config_json(&self, proxy: &ObjectKey) -> Option<String> {
        let mesh = self.lock();
        let config = mesh.proxy_config(&ObjectKey::new(&proxy.namespace, &proxy.name))?;
        serde_json::to_string_pretty(&config).ok()
    }
}
