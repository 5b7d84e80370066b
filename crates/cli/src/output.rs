//! `-o table|json|yaml`: one flag for every operator command, tables for people and JSON or
//! YAML for scripts.

use serde::Serialize;

/// How a command prints what it found.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns and sentences, for people.
    #[default]
    Table,
    /// One JSON document.
    Json,
    /// One YAML document.
    Yaml,
}

impl Format {
    /// `value` as JSON or YAML, or `table()` for people; an error names what could not be
    /// written.
    pub fn render<T: Serialize>(
        self,
        value: &T,
        table: impl FnOnce() -> String,
    ) -> Result<String, String> {
        match self {
            Format::Table => Ok(table()),
            Format::Json => serde_json::to_string_pretty(value)
                .map(|s| s + "\n")
                .map_err(|e| format!("-o json: {e}")),
            Format::Yaml => serde_yaml_ng::to_string(value).map_err(|e| format!("-o yaml: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_prints_the_same_value() {
        let value = serde_json::json!({"proxy": "demo/web-0", "synced": true});
        let table = || "demo/web-0 SYNCED\n".to_owned();
        assert_eq!(
            Format::Table.render(&value, table).as_deref(),
            Ok("demo/web-0 SYNCED\n")
        );
        let json = Format::Json.render(&value, table).expect("json");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).ok(),
            Some(value.clone())
        );
        assert_eq!(
            Format::Yaml.render(&value, table).as_deref(),
            Ok("proxy: demo/web-0\nsynced: true\n")
        );
    }
}
