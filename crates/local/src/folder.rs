//! The folder local mode reads: what was last read from it, whether it changed since, and
//! the events that turn the last state into the new one. A reload reads again only the files
//! that changed, so an edit costs its own file, not the whole folder.

use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
    path::{Path, PathBuf},
    time::SystemTime,
};

use remora_inputs::{LoadError, Loaded, load_text, yaml_files};
use remora_model::input::{Event, Kind, Object, ObjectKey};

/// A file's modification time and size.
type Stamp = (SystemTime, u64);

/// Every object of the folder, each with a hash of its content to tell changes apart.
pub(crate) type Objects = Vec<(Object, u64)>;

/// The folder and what was last read from it.
pub(crate) struct Folder {
    dir: PathBuf,
    /// Every file as last read.
    files: BTreeMap<PathBuf, File>,
    /// Every object last read, with its hash.
    objects: BTreeMap<(Kind, ObjectKey), u64>,
    /// The last load failed: an unreadable folder is reported once, not on every poll.
    broken: bool,
}

/// One file's objects as last read.
struct File {
    stamp: Stamp,
    /// How many objects the files before it held: objects without a creation time get one
    /// by their place in the folder, so a file now at another place is read again.
    first: usize,
    objects: Objects,
    /// Its documents that could not be used, and the warnings of those that could.
    problems: Vec<String>,
}

impl Folder {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Folder {
            dir,
            files: BTreeMap::new(),
            objects: BTreeMap::new(),
            broken: false,
        }
    }

    pub(crate) fn changed(&self) -> bool {
        match stamps(&self.dir) {
            Ok(now) => {
                now.len() != self.files.len()
                    || now
                        .iter()
                        .zip(&self.files)
                        .any(|((p, s), (q, f))| p != q || *s != f.stamp)
            }
            Err(_) => !self.broken,
        }
    }

    /// Reads the files that changed since the last load (logging the documents that cannot
    /// be used) and takes the others as they were.
    pub(crate) fn load(&mut self) -> Result<Objects, LoadError> {
        let loaded = self.reload();
        self.broken = loaded.is_err();
        loaded
    }

    fn reload(&mut self) -> Result<Objects, LoadError> {
        let mut files = BTreeMap::new();
        let mut objects = Vec::new();
        for (path, stamp) in stamps(&self.dir)? {
            let first = objects.len();
            let file = match self.files.remove(&path) {
                Some(f) if f.stamp == stamp && f.first == first => f,
                _ => read(&path, stamp, first)?,
            };
            objects.extend(file.objects.iter().cloned());
            files.insert(path, file);
        }
        self.files = files;
        Ok(objects)
    }

    /// What is wrong with the documents last read: those passed over, and the warnings of
    /// the others.
    pub(crate) fn problems(&self) -> impl Iterator<Item = String> + '_ {
        self.files.values().flat_map(|f| f.problems.iter().cloned())
    }

    /// The events that turn the previous state into `objects`.
    pub(crate) fn events(&mut self, objects: Objects) -> Vec<Event> {
        let mut next = BTreeMap::new();
        let mut events = Vec::new();
        for (o, hash) in objects {
            let id = (o.kind(), o.key());
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

/// Every manifest under `dir` with its stamp, in the order they are read; a file gone
/// between the listing and its stamp is left out.
fn stamps(dir: &Path) -> Result<BTreeMap<PathBuf, Stamp>, LoadError> {
    Ok(yaml_files(dir)?
        .into_iter()
        .filter_map(|path| {
            let meta = std::fs::metadata(&path).ok()?;
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            Some((path, (modified, meta.len())))
        })
        .collect())
}

/// Reads one file whose objects start at place `first` in the folder.
fn read(path: &Path, stamp: Stamp, first: usize) -> Result<File, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut loaded = Loaded::default();
    load_text(path, &text, first, &mut loaded);
    let skipped = loaded.problems.iter().map(|p| format!("skipped {p}"));
    let warnings = loaded.warnings.iter().map(|w| format!("warning {w}"));
    let problems = skipped.chain(warnings).collect();
    let objects = loaded
        .objects
        .into_iter()
        .map(|o| {
            let mut h = DefaultHasher::new();
            format!("{o:?}").hash(&mut h);
            let hash = h.finish();
            (o, hash)
        })
        .collect();
    Ok(File {
        stamp,
        first,
        objects,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(name: &str, team: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    team: {team}\n"
        )
    }

    /// A route whose parent's name is as long as `parent` in every call, so that files of
    /// one route each keep their size.
    fn route(name: &str, parent: &str) -> String {
        format!(
            "apiVersion: remora.dev/v1alpha1\nkind: TrafficRoute\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  parentRefs:\n    - name: {parent}\n"
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

    #[test]
    fn a_reload_reads_again_only_the_files_that_changed_or_moved_in_the_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = |file: &str| dir.path().join(file);
        std::fs::write(path("b.yaml"), route("b", "one")).expect("write");
        std::fs::write(path("c.yaml"), route("c", "one")).expect("write");
        let mut folder = Folder::new(dir.path().to_owned());
        assert_eq!(reload(&mut folder), ["+b", "+c"]);

        // b's content changes behind a stamp that does not: b is not read again.
        let stamp = std::fs::metadata(path("b.yaml")).expect("stat").modified();
        std::fs::write(path("b.yaml"), route("b", "two")).expect("write");
        let b = std::fs::File::options().write(true).open(path("b.yaml"));
        b.expect("open")
            .set_modified(stamp.expect("mtime"))
            .expect("touch");
        std::fs::write(path("c.yaml"), route("c", "two")).expect("write");
        assert_eq!(reload(&mut folder), ["+c"]);

        // A file ahead of both moves them in the order, and routes without a creation time
        // get theirs by place: both are read again and change.
        std::fs::write(path("a.yaml"), namespace("a", "one")).expect("write");
        assert_eq!(reload(&mut folder), ["+a", "+b", "+c"]);
    }
}
