//! Turns a CRD's YAML into a Helm template that renders it unchanged, except that its CEL
//! rules (`x-kubernetes-validations`) appear only for Kubernetes 1.25 and later. Older
//! servers do not know the field: kubectl's validation refuses it, their server-side apply
//! (which Helm 4 uses) fails with `field not declared in schema`, and a client-side apply
//! has them dropped anyway; Remora's own validation reports what they would catch.

const CEL_KEY: &str = "x-kubernetes-validations:";
const IF_CEL_KNOWN: &str =
    r#"{{- if semverCompare ">=1.25-0" .Capabilities.KubeVersion.Version }}"#;
const END: &str = "{{- end }}";

/// `yaml` as serde_yaml_ng writes it: block style, a sequence under a key at the key's own
/// indentation.
pub fn from_yaml(yaml: &str) -> String {
    let escaped = escape_actions(yaml);
    let lines: Vec<&str> = escaped.lines().collect();
    let mut out = String::with_capacity(escaped.len() + 1024);
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        if line.trim_start() != CEL_KEY {
            push_line(&mut out, line);
            continue;
        }
        // `{{-` eats the line break before it, so the guards leave no blank lines.
        let pad = &line[..indent(line)];
        push_line(&mut out, &format!("{pad}{IF_CEL_KNOWN}"));
        push_line(&mut out, line);
        while i < lines.len() && inside_value(lines[i], pad.len()) {
            push_line(&mut out, lines[i]);
            i += 1;
        }
        push_line(&mut out, &format!("{pad}{END}"));
    }
    out
}

/// Whether `line` still belongs to the value of a key indented by `key_indent`: deeper
/// lines, blank lines of a block scalar, and the items of a sequence at the key's level.
fn inside_value(line: &str, key_indent: usize) -> bool {
    let depth = indent(line);
    line.trim().is_empty()
        || depth > key_indent
        || (depth == key_indent && line[depth..].starts_with("- "))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line);
    out.push('\n');
}

/// Text that would open a template action (a `{{` in a description) is printed literally.
fn escape_actions(yaml: &str) -> String {
    yaml.replace("{{", r#"{{ "{{" }}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH_RULES: &str = "\
spec:
  properties:
    path:
      type: object
      x-kubernetes-validations:
      - message: must start with '/'
        rule: self.startsWith('/')
      - message: |-
          two lines

          and a blank one
        rule: 'true'
    port:
      type: integer
  x-kubernetes-validations:
  - rule: has(self.port)
status: {}
";

    #[test]
    fn each_rule_list_is_wrapped_whole_in_a_version_guard_at_its_own_indentation() {
        let out = from_yaml(WITH_RULES);
        let expected = "\
spec:
  properties:
    path:
      type: object
      {{- if semverCompare \">=1.25-0\" .Capabilities.KubeVersion.Version }}
      x-kubernetes-validations:
      - message: must start with '/'
        rule: self.startsWith('/')
      - message: |-
          two lines

          and a blank one
        rule: 'true'
      {{- end }}
    port:
      type: integer
  {{- if semverCompare \">=1.25-0\" .Capabilities.KubeVersion.Version }}
  x-kubernetes-validations:
  - rule: has(self.port)
  {{- end }}
status: {}
";
        assert_eq!(out, expected);
    }

    #[test]
    fn yaml_without_rules_comes_out_unchanged() {
        let yaml = "a:\n  b: 1\n  c:\n  - x\nd: text\n";
        assert_eq!(from_yaml(yaml), yaml);
    }

    #[test]
    fn braces_in_descriptions_are_printed_literally_rather_than_run() {
        let out = from_yaml("description: use {{ .name }} here\n");
        assert_eq!(out, "description: use {{ \"{{\" }} .name }} here\n");
    }
}
