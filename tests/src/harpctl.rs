//! Running `harpctl` against a [`TestCluster`], and reading its YAML output back without a
//! YAML library (a block-style subset: what serde_yaml prints for harpctl's views).

use std::process::{Child, Command, Output, Stdio};

use serde_json::{Map, Value};

use crate::bins::workspace_bin;
use crate::cluster::TestCluster;
use crate::rt::block_on;

/// `-c <cluster> --dcs <every etcd endpoint>`; with a secure etcd, `-f <config>` naming the
/// cluster's admin user, its client certificate and password file.
pub fn cluster_args(cluster: &TestCluster) -> Vec<String> {
    if cluster.etcd.secure().is_none() {
        return vec![
            "-c".into(),
            cluster.name().into(),
            "--dcs".into(),
            cluster.etcd.endpoints().join(","),
        ];
    }
    let path = cluster.dir().join("harpctl-admin.yml");
    if !path.is_file() {
        let dcs = cluster
            .etcd
            .unit_dcs_yaml(cluster.name(), cluster.dir(), "admin", "");
        let location = cluster.nodes.first().map_or("dca", |n| n.location.as_str());
        let text = format!(
            "cluster:\n  name: {}\ndcs:\n  driver: etcd\n  endpoints: [{}]\n{}location: {location}\n",
            cluster.name(),
            cluster.etcd.endpoints().join(", "),
            crate::manager::indent(&dcs)
        );
        std::fs::write(&path, text).expect("write the harpctl config");
    }
    vec!["-f".into(), path.display().to_string()]
}

/// Runs `harpctl -c <name> --dcs <endpoints> <args>`: `(exit code, stdout, stderr)`.
pub fn harpctl(cluster: &TestCluster, args: &[&str]) -> (i32, String, String) {
    let mut all = cluster_args(cluster);
    all.extend(args.iter().map(|a| a.to_string()));
    harpctl_raw(&all.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Runs `harpctl <args>` exactly as given: `(exit code, stdout, stderr)`; a signal is -1.
pub fn harpctl_raw(args: &[&str]) -> (i32, String, String) {
    let out = command(args)
        .output()
        .unwrap_or_else(|e| panic!("run harpctl {args:?}: {e}"));
    split(out)
}

/// Starts `harpctl -c <name> --dcs <endpoints> <args>` with piped output; finish it with
/// [`finish`].
pub fn spawn_harpctl(cluster: &TestCluster, args: &[&str]) -> Child {
    let mut all = cluster_args(cluster);
    all.extend(args.iter().map(|a| a.to_string()));
    command(&all.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn harpctl {args:?}: {e}"))
}

/// Waits for a [`spawn_harpctl`] child: `(exit code, stdout, stderr)`.
pub fn finish(child: Child) -> (i32, String, String) {
    split(child.wait_with_output().expect("wait for harpctl"))
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(workspace_bin("harpctl"));
    cmd.args(args).stdin(Stdio::null());
    cmd
}

fn split(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs harpctl, expecting exit 0; returns stdout (panics with both streams otherwise).
pub fn harpctl_ok(cluster: &TestCluster, args: &[&str]) -> String {
    let (code, out, err) = harpctl(cluster, args);
    assert_eq!(
        code, 0,
        "harpctl {args:?} exited {code}\nstdout: {out}\nstderr: {err}"
    );
    out
}

/// Runs harpctl, expecting exit `code`; returns stderr.
pub fn harpctl_fails(cluster: &TestCluster, args: &[&str], code: i32) -> String {
    let (got, out, err) = harpctl(cluster, args);
    assert_eq!(
        got, code,
        "harpctl {args:?}: want exit {code}\nstdout: {out}\nstderr: {err}"
    );
    err
}

/// `args` with `-o json`, parsed; `None` if harpctl exited non-zero.
pub fn try_json_of(cluster: &TestCluster, args: &[&str]) -> Option<Value> {
    let (code, out, _) = harpctl(cluster, &with_output(args, "json"));
    (code == 0).then(|| serde_json::from_str(&out).expect("harpctl -o json prints JSON"))
}

/// `args` with `-o json`, parsed; panics if harpctl fails.
pub fn json_of(cluster: &TestCluster, args: &[&str]) -> Value {
    let out = harpctl_ok(cluster, &with_output(args, "json"));
    serde_json::from_str(&out).expect("harpctl -o json prints JSON")
}

/// `args` with `-o yaml`, parsed with [`yaml_to_json`]; panics if harpctl fails.
pub fn yaml_of(cluster: &TestCluster, args: &[&str]) -> Value {
    yaml_to_json(&harpctl_ok(cluster, &with_output(args, "yaml")))
}

fn with_output<'a>(args: &[&'a str], format: &'a str) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["-o", format]);
    all
}

/// A kubectl-style table: the header cells, and each row's cells (split on whitespace).
pub fn parse_table(out: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = out
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
    let header = lines.next().expect("a header line");
    (header, lines.collect())
}

/// The row whose first cell is `first`; panics if none.
pub fn table_row<'a>(rows: &'a [Vec<String>], first: &str) -> &'a [String] {
    rows.iter()
        .find(|r| r.first().is_some_and(|c| c == first))
        .unwrap_or_else(|| panic!("no row {first} in {rows:?}"))
}

/// Asserts that `v` has every field of `want` (a JSON object) with the same value.
pub fn assert_fields(v: &Value, want: Value) {
    let want = want.as_object().expect("expected fields as a JSON object");
    for (key, w) in want {
        assert_eq!(&v[key], w, "field `{key}` of {v}");
    }
}

/// The value at `key` in the cluster's etcd, if the key exists.
pub fn etcd_value(cluster: &TestCluster, key: &str) -> Option<Vec<u8>> {
    block_on(|| async {
        let mut client = cluster.client().await;
        let resp = client.get(key, None).await.expect("etcd get");
        resp.kvs().first().map(|kv| kv.value().to_vec())
    })
}

/// Parses block-style YAML (nested mappings and sequences, plain or quoted scalars, `[]` and
/// `{}`) into JSON values; panics on anything else, which is the point in a test.
pub fn yaml_to_json(text: &str) -> Value {
    let mut lines: Vec<(usize, String)> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && l.trim() != "---")
        .map(|l| (l.len() - l.trim_start().len(), l.trim().to_owned()))
        .collect();
    if lines.is_empty() {
        return Value::Null;
    }
    let mut i = 0;
    let indent = lines[0].0;
    let v = block(&mut lines, &mut i, indent);
    assert_eq!(i, lines.len(), "unparsed YAML from line {}: {text}", i + 1);
    v
}

fn block(lines: &mut [(usize, String)], i: &mut usize, indent: usize) -> Value {
    let text = &lines[*i].1;
    if text == "-" || text.starts_with("- ") {
        sequence(lines, i, indent)
    } else if key_value(text).is_some() {
        mapping(lines, i, indent)
    } else {
        *i += 1;
        scalar(text)
    }
}

fn sequence(lines: &mut [(usize, String)], i: &mut usize, indent: usize) -> Value {
    let mut items = Vec::new();
    while *i < lines.len() && lines[*i].0 == indent && lines[*i].1.starts_with('-') {
        let rest = lines[*i].1[1..].trim_start().to_owned();
        if rest.is_empty() {
            *i += 1;
            let inner = lines[*i].0;
            items.push(block(lines, i, inner));
        } else {
            // `- key: value` opens a mapping indented past the dash.
            lines[*i] = (indent + 2, rest);
            items.push(block(lines, i, indent + 2));
        }
    }
    Value::Array(items)
}

fn mapping(lines: &mut [(usize, String)], i: &mut usize, indent: usize) -> Value {
    let mut map = Map::new();
    while *i < lines.len() && lines[*i].0 == indent && !lines[*i].1.starts_with('-') {
        let (key, value) = key_value(&lines[*i].1)
            .unwrap_or_else(|| panic!("not `key: value` at YAML line {}", *i + 1));
        *i += 1;
        let v = if !value.is_empty() {
            scalar(&value)
        } else if *i < lines.len() && lines[*i].0 > indent {
            let inner = lines[*i].0;
            block(lines, i, inner)
        } else if *i < lines.len() && lines[*i].0 == indent && lines[*i].1.starts_with('-') {
            // serde_yaml puts a mapping's sequence at the key's own indentation.
            sequence(lines, i, indent)
        } else {
            Value::Null
        };
        map.insert(key, v);
    }
    Value::Object(map)
}

fn key_value(line: &str) -> Option<(String, String)> {
    let (k, v) = match line.split_once(": ") {
        Some((k, v)) => (k, v.trim()),
        None => (line.strip_suffix(':')?, ""),
    };
    let key = match scalar(k) {
        Value::String(s) => s,
        other => other.to_string(),
    };
    Some((key, v.to_owned()))
}

fn scalar(s: &str) -> Value {
    match s {
        "null" | "~" => return Value::Null,
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        "[]" => return Value::Array(Vec::new()),
        "{}" => return Value::Object(Map::new()),
        _ => {}
    }
    if let Some(inner) = s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return Value::String(inner.replace("''", "'"));
    }
    if s.starts_with('"') {
        return serde_json::from_str(s).unwrap_or_else(|e| panic!("YAML string {s}: {e}"));
    }
    if let Ok(n) = s.parse::<i64>() {
        return n.into();
    }
    if let Ok(n) = s.parse::<u64>() {
        return n.into();
    }
    if let Ok(f) = s.parse::<f64>() {
        return f.into();
    }
    Value::String(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_serde_yaml_block_style() {
        let yaml = "name: c\nmanaged: false\nlocations:\n- location: dca\n  leader: n1\n  \
                    token: 17\n  tags: []\n- location: dcb\n  leader: null\n  token: '5'\n\
                    nested:\n  deep:\n    x: \"a: b\"\n";
        let want = serde_json::json!({
            "name": "c",
            "managed": false,
            "locations": [
                {"location": "dca", "leader": "n1", "token": 17, "tags": []},
                {"location": "dcb", "leader": null, "token": "5"}
            ],
            "nested": {"deep": {"x": "a: b"}}
        });
        assert_eq!(yaml_to_json(yaml), want);
        assert_eq!(
            yaml_to_json("- a: 1\n- a: 2\n"),
            serde_json::json!([{"a": 1}, {"a": 2}])
        );
        assert_eq!(yaml_to_json("[]\n"), serde_json::json!([]));
    }
}
