//! Intent files: a rewrite's durable note, written before its new part, naming the parts that
//! part replaces (one file name a line). Once the new part exists they are no longer listed,
//! and they are removed after [`super::SOURCE_GRACE`].
//!
//! The file's name says which rewrite it notes (`{kind}-{ulid}.intent`, the ulid the new
//! part's), as their sources differ: a compaction's new part holds every row of its sources,
//! so if it is set aside as damaged they are listed again; a move's or a deletion's holds the
//! rows left alone, so its sources, which hold the rows taken too, are never listed again once
//! it was written. (Moves were noted as compactions: a moved part set aside brought back the
//! receipts archived from it, which the dispatcher had forgotten, to be sent again; a review.)

use std::path::Path;

use ulid::Ulid;

/// What a rewrite does with the rows of the parts it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rewrite {
    /// Merges them all into its new part.
    Compaction,
    /// Moves some to another dataset, the rest into its new part.
    Move,
    /// Deletes some, the rest into its new part.
    Deletion,
}

impl Rewrite {
    pub(super) const ALL: [Self; 3] = [Self::Compaction, Self::Move, Self::Deletion];

    fn prefix(self) -> &'static str {
        match self {
            Self::Compaction => "compact",
            Self::Move => "move",
            Self::Deletion => "delete",
        }
    }

    /// The name of the intent file for the new part `id`.
    pub(super) fn file_name(self, id: Ulid) -> String {
        format!("{}-{id}.intent", self.prefix())
    }

    /// The rewrite and new part an intent file's name says; `None` for any other file.
    pub(super) fn of(path: &Path) -> Option<(Self, Ulid)> {
        let name = path.file_name()?.to_str()?.strip_suffix(".intent")?;
        let (prefix, id) = name.split_once('-')?;
        let kind = Self::ALL.into_iter().find(|k| k.prefix() == prefix)?;
        Some((kind, Ulid::from_string(id).ok()?))
    }

    /// Whether its sources hold rows its new part does not: they stay hidden though that part
    /// was set aside as damaged.
    pub(super) fn took_rows(self) -> bool {
        self != Self::Compaction
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intent_s_name_says_its_rewrite_and_new_part() {
        let id = Ulid::generate();
        for kind in Rewrite::ALL {
            let name = kind.file_name(id);
            assert_eq!(Rewrite::of(Path::new(&name)), Some((kind, id)));
        }
        for other in [
            format!("part-{id}.parquet"),
            "import.pending".into(),
            format!("merge-{id}.intent"),
            "compact-x.intent".into(),
        ] {
            assert_eq!(Rewrite::of(Path::new(&other)), None, "{other}");
        }
    }
}
