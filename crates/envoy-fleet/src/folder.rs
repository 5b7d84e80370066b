//! The folder local mode polls, in a temporary directory removed on drop: the mesh in one
//! file, the echo route in another, which an edit replaces whole.

use std::{
    fs,
    path::{Path, PathBuf},
};

use remora_model::input::Object;
use tempfile::TempDir;

use crate::{FleetError, manifest};

/// Everything but the route.
const MESH_FILE: &str = "00-mesh.yaml";
/// The route the benchmark edits; loaded after the mesh.
const ROUTE_FILE: &str = "50-route.yaml";
/// Where the next route is written before it replaces the old one. Outside the polled
/// folder, so local mode never sees a half-written file.
const STAGED_ROUTE: &str = "route.next";

/// A temporary working directory holding the polled folder.
pub struct MeshFolder {
    root: TempDir,
}

impl MeshFolder {
    /// Writes the mesh and the route into a new temporary folder.
    pub fn create(objects: &[Object], route: &Object) -> Result<MeshFolder, FleetError> {
        let root = tempfile::Builder::new()
            .prefix("envoy-fleet.")
            .tempdir()
            .map_err(|source| FleetError::Io {
                what: "create a temporary folder".into(),
                source,
            })?;
        let folder = MeshFolder { root };
        let dir = folder.dir();
        fs::create_dir(&dir).map_err(|source| FleetError::Io {
            what: format!("create {}", dir.display()),
            source,
        })?;
        write(&dir.join(MESH_FILE), &manifest::yaml(objects)?)?;
        folder.write_route(route)?;
        Ok(folder)
    }

    /// The folder local mode reads.
    pub fn dir(&self) -> PathBuf {
        self.root.path().join("mesh")
    }

    /// The working directory, for the Envoys' files too.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Replaces the route file in one step: written beside the folder, then renamed in.
    pub fn write_route(&self, route: &Object) -> Result<(), FleetError> {
        let staged = self.root.path().join(STAGED_ROUTE);
        write(&staged, &manifest::yaml(std::slice::from_ref(route))?)?;
        let target = self.dir().join(ROUTE_FILE);
        fs::rename(&staged, &target).map_err(|source| FleetError::Io {
            what: format!("rename {} to {}", staged.display(), target.display()),
            source,
        })
    }
}

fn write(path: &Path, text: &str) -> Result<(), FleetError> {
    fs::write(path, text).map_err(|source| FleetError::Io {
        what: format!("write {}", path.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{FleetMesh, Version};

    #[test]
    fn an_edit_replaces_the_route_file_and_leaves_nothing_else_in_the_folder() {
        let mesh = FleetMesh::new(5, false, 1);
        let folder =
            MeshFolder::create(&mesh.objects(), &mesh.route(Version::V1)).expect("folder written");
        let route_file = folder.dir().join(ROUTE_FILE);
        let before = fs::read_to_string(&route_file).expect("route file");
        folder
            .write_route(&mesh.route(Version::V2))
            .expect("route replaced");
        let after = fs::read_to_string(&route_file).expect("route file");
        assert_ne!(before, after);
        let expected = manifest::yaml(&[mesh.route(Version::V2)]).expect("renders");
        assert_eq!(after, expected);
        let mut names: Vec<_> = fs::read_dir(folder.dir())
            .expect("folder")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, [MESH_FILE, ROUTE_FILE]);
    }

    #[test]
    fn the_temporary_folder_is_removed_on_drop() {
        let mesh = FleetMesh::new(5, false, 1);
        let folder =
            MeshFolder::create(&mesh.objects(), &mesh.route(Version::V1)).expect("folder written");
        let root = folder.root().to_owned();
        drop(folder);
        assert!(!root.exists());
    }
}
