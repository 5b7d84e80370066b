//! Where the CRD files go: plain folders, and the `templates/` of a chart.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::render::{File, Layout};

/// One output folder named on the command line.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub dir: PathBuf,
    pub layout: Layout,
}

impl Target {
    pub fn plain(dir: &str) -> Self {
        Self {
            dir: PathBuf::from(dir),
            layout: Layout::Plain,
        }
    }

    /// A chart's folder: the CRDs are its templates.
    pub fn chart(chart_dir: &str) -> Self {
        Self {
            dir: Path::new(chart_dir).join("templates"),
            layout: Layout::ChartTemplates,
        }
    }
}

pub fn write(target: &Target, files: &[File]) -> Result<(), (PathBuf, io::Error)> {
    fs::create_dir_all(&target.dir).map_err(|e| (target.dir.clone(), e))?;
    for file in files {
        let path = target.dir.join(&file.name);
        fs::write(&path, &file.yaml).map_err(|e| (path, e))?;
    }
    Ok(())
}

/// The paths under `target` whose content is not what `files` holds (missing ones included).
pub fn stale(target: &Target, files: &[File]) -> Vec<PathBuf> {
    files
        .iter()
        .map(|file| target.dir.join(&file.name))
        .zip(files)
        .filter(|(path, file)| fs::read_to_string(path).ok().as_deref() != Some(file.yaml.as_str()))
        .map(|(path, _)| path)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::render;

    #[test]
    fn a_written_chart_checks_clean_and_an_edited_template_is_reported() {
        let chart = tempfile::tempdir().expect("a temp dir");
        let target = Target::chart(chart.path().to_str().expect("a UTF-8 temp path"));
        let files = render(Layout::ChartTemplates).expect("the CRDs render");
        write(&target, &files).expect("the chart is written");
        assert!(stale(&target, &files).is_empty());

        let edited = chart.path().join("templates").join(&files[0].name);
        fs::write(&edited, "kind: Edited\n").expect("the file is written");
        assert_eq!(stale(&target, &files), vec![edited]);
    }

    #[test]
    fn plain_files_do_not_pass_for_chart_templates() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let plain = Target::plain(dir.path().to_str().expect("a UTF-8 temp path"));
        write(&plain, &render(Layout::Plain).expect("the CRDs render"))
            .expect("the file is written");
        let as_templates = Target {
            dir: dir.path().to_owned(),
            layout: Layout::ChartTemplates,
        };
        assert_eq!(
            stale(
                &as_templates,
                &render(Layout::ChartTemplates).expect("the CRDs render")
            )
            .len(),
            3
        );
    }
}
