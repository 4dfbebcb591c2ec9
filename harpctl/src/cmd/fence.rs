//! `harpctl fence|unfence [NODE]`: puts or deletes `fenced/<node>`. A fenced node never
//! leads, and its manager releases the lead if it holds it.

use serde::{Deserialize, Serialize};

use crate::context::{Context, check_name};
use crate::error::CtlError;
use crate::output::{Format, render_data};

/// The value of `fenced/<node>`: managers only test the key's presence; the time is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceRecord {
    pub version: u32,
    pub fenced_ms: u64,
}

/// What a state-changing command did, for `-o json|yaml` (and its one-line text form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `cluster`, `node` or `proxy`.
    pub kind: &'static str,
    pub name: String,
    /// The state now: `fenced`, `unfenced`, `managed`, `unmanaged`.
    pub state: &'static str,
    /// False when it was already so (nothing was written).
    pub changed: bool,
}

impl Change {
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table if self.changed => {
                format!("{} {} {}\n", self.kind, self.name, self.state)
            }
            Format::Table => format!("{} {} was already {}\n", self.kind, self.name, self.state),
            _ => render_data(self, format),
        }
    }
}

pub async fn run(ctx: &Context, node: Option<String>, fence: bool) -> Result<String, CtlError> {
    let node = match node {
        Some(n) => n,
        None => ctx.local_node()?,
    };
    check_name("node", &node)?;
    let (cluster, conn) = super::connect(ctx).await?;
    let snap = super::read(&conn, &cluster).await?;
    // Unknown: no status and no fence. Nothing is written for a typo.
    if !snap.nodes.contains_key(&node) && !snap.fenced.contains(&node) {
        return Err(CtlError::not_found(
            "node",
            &node,
            &cluster,
            &snap.node_names(),
        ));
    }
    let key = conn.keys().fenced(&node);
    let changed = if fence {
        let rec = FenceRecord {
            version: harp_core::records::RECORD_VERSION,
            fenced_ms: harp_core::records::unix_ms(),
        };
        let value = serde_json::to_string(&rec).expect("fence record serializes");
        conn.put_if_absent(&key, value).await?
    } else {
        conn.delete(&key).await?
    };
    let change = Change {
        kind: "node",
        name: node,
        state: if fence { "fenced" } else { "unfenced" },
        changed,
    };
    Ok(change.render(ctx.format()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_as_one_line() {
        let mut c = Change {
            kind: "node",
            name: "n1".into(),
            state: "fenced",
            changed: true,
        };
        assert_eq!(c.render(Format::Table), "node n1 fenced\n");
        c.changed = false;
        assert_eq!(c.render(Format::Table), "node n1 was already fenced\n");
        let v: serde_json::Value = serde_json::from_str(&c.render(Format::Json)).unwrap();
        assert_eq!(v["changed"], false);
        let rec = FenceRecord {
            version: 1,
            fenced_ms: 5,
        };
        assert_eq!(
            serde_json::to_string(&rec).unwrap(),
            r#"{"version":1,"fenced_ms":5}"#
        );
    }
}
