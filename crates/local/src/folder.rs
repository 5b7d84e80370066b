//! The folder local mode reads: what was last read from it, whether it changed since, and
//! the events that turn the last state into the new one.

use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
    path::{Path, PathBuf},
    time::SystemTime,
};

use remora_inputs::{Loaded, load_dir};
use remora_model::input::{Event, Kind, Object, ObjectKey};
use tracing::warn;

/// The folder and what was last read from it.
pub(crate) struct Folder {
    dir: PathBuf,
    /// Every file with its modification time and size when last read.
    stamp: BTreeMap<PathBuf, (SystemTime, u64)>,
    /// Every object last read, with a hash of its content to tell changes apart.
    objects: BTreeMap<(Kind, ObjectKey), u64>,
}

impl Folder {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Folder {
            dir,
            stamp: BTreeMap::new(),
            objects: BTreeMap::new(),
        }
    }

    pub(crate) fn changed(&self) -> bool {
        stamp(&self.dir) != self.stamp
    }

    /// Reads the folder, logging the documents that cannot be used.
    pub(crate) fn load(&mut self) -> Result<Vec<Object>, remora_inputs::LoadError> {
        self.stamp = stamp(&self.dir);
        let Loaded {
            objects, problems, ..
        } = load_dir(&self.dir)?;
        for p in problems {
            warn!(problem = %p, "skipped a document");
        }
        Ok(objects)
    }

    /// The events that turn the previous state into `objects`.
    pub(crate) fn events(&mut self, objects: Vec<Object>) -> Vec<Event> {
        let mut next = BTreeMap::new();
        let mut events = Vec::new();
        for o in objects {
            let id = (o.kind(), o.key());
            let mut h = DefaultHasher::new();
            format!("{o:?}").hash(&mut h);
            let hash = h.finish();
            if self.objects.get(&id) != Some(&hash) {
                events.push(Event::Upsert(o));
            }
            next.insert(id, hash);
        }
        for id in self.objects.keys() {
            if !next.contains_key(id) {
                events.push(Event::Delete(id.0, id.1.clone()));
            }
        }
        self.objects = next;
        events
    }
}

fn stamp(dir: &Path) -> BTreeMap<PathBuf, (SystemTime, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else {
                out.insert(
                    path,
                    (
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        meta.len(),
                    ),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(name: &str, team: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    team: {team}\n"
        )
    }

    fn summary(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Upsert(o) => format!("+{}", o.key().name),
                Event::Delete(_, k) => format!("-{}", k.name),
            })
            .collect()
    }

    fn reload(folder: &mut Folder) -> Vec<String> {
        let objects = folder.load().expect("load");
        summary(&folder.events(objects))
    }

    #[test]
    fn a_reload_sends_only_what_was_added_changed_or_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |file: &str, text: String| std::fs::write(dir.path().join(file), text);
        write("a.yaml", namespace("a", "one")).expect("write");
        write("b.yaml", namespace("b", "one")).expect("write");
        let mut folder = Folder::new(dir.path().to_owned());
        assert_eq!(reload(&mut folder), ["+a", "+b"]);
        assert!(!folder.changed());
        assert!(reload(&mut folder).is_empty(), "nothing changed");

        write("a.yaml", namespace("a", "two")).expect("write");
        std::fs::remove_file(dir.path().join("b.yaml")).expect("remove");
        write("c.yaml", namespace("c", "one")).expect("write");
        assert!(folder.changed());
        assert_eq!(reload(&mut folder), ["+a", "+c", "-b"]);
    }
}
