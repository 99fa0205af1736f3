//! How log entries read in logs and refusals: one line per command, its kind and the fields
//! that identify it (never the data it carries).

use std::fmt;

use crate::command::{ChunkCommand, Command, MoveCommand, RegistryCommand};

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Move(m) => write!(f, "{m}"),
            Command::Chunk(c) => write!(f, "{c}"),
            Command::Unit(u) => write!(f, "{u:?}"),
            Command::Registry(r) => write!(f, "{r}"),
            Command::Kv {
                slot,
                key,
                op,
                keyspace,
                ..
            } => write!(
                f,
                "{} slot={slot} keyspace={keyspace} key={key:?}",
                op.name()
            ),
            Command::Bootstrap { shard, ranges, .. } => {
                write!(f, "bootstrap shard={shard} ranges={ranges:?}")
            }
        }
    }
}

impl fmt::Display for MoveCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MoveCommand::Out {
                slot, to, epoch, ..
            } => {
                write!(f, "move-out slot={slot} to={to} epoch={epoch}")
            }
            MoveCommand::In {
                slot,
                from,
                epoch,
                kv,
                ..
            } => {
                write!(
                    f,
                    "move-in slot={slot} from={from} epoch={epoch} keys={}",
                    kv.len()
                )
            }
            MoveCommand::Stage {
                slot,
                from,
                epoch,
                copy,
                part,
                kv,
                collections_kv,
                deleted,
                ..
            } => write!(
                f,
                "move-stage slot={slot} from={from} epoch={epoch} copy={copy:x} part={part} keys={} deleted={}",
                kv.len() + collections_kv.len(),
                deleted.len()
            ),
            MoveCommand::Unstage { slot, copy } => {
                write!(f, "move-unstage slot={slot} copy={copy:x}")
            }
            MoveCommand::Done { slot, epoch } => write!(f, "move-done slot={slot} epoch={epoch}"),
            MoveCommand::Abort { slot, epoch } => write!(f, "move-abort slot={slot} epoch={epoch}"),
            MoveCommand::Refuse { slot, from, epoch } => {
                write!(f, "move-refuse slot={slot} from={from} epoch={epoch}")
            }
        }
    }
}

impl fmt::Display for ChunkCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkCommand::Create { keyspace, .. } => write!(f, "chunk-create keyspace={keyspace}"),
            ChunkCommand::Split { id, at, .. } => write!(f, "chunk-split id={id} at={at:?}"),
            ChunkCommand::Merge { left, right, .. } => {
                write!(f, "chunk-merge left={left} right={right}")
            }
            ChunkCommand::Out { id, to, epoch, .. } => {
                write!(f, "chunk-out id={id} to={to} epoch={epoch}")
            }
            ChunkCommand::In {
                id,
                from,
                epoch,
                kv,
                ..
            } => write!(
                f,
                "chunk-in id={id} from={from} epoch={epoch} keys={}",
                kv.len()
            ),
            ChunkCommand::Stage {
                id,
                from,
                epoch,
                copy,
                part,
                kv,
                deleted,
                ..
            } => write!(
                f,
                "chunk-stage id={id} from={from} epoch={epoch} copy={copy:x} part={part} keys={} deleted={}",
                kv.len(),
                deleted.len()
            ),
            ChunkCommand::Unstage { id, copy } => write!(f, "chunk-unstage id={id} copy={copy:x}"),
            ChunkCommand::Done { id, epoch } => write!(f, "chunk-done id={id} epoch={epoch}"),
            ChunkCommand::Abort { id, epoch } => write!(f, "chunk-abort id={id} epoch={epoch}"),
            ChunkCommand::Refuse { id, from, epoch } => {
                write!(f, "chunk-refuse id={id} from={from} epoch={epoch}")
            }
        }
    }
}

impl fmt::Display for RegistryCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryCommand::SetState { state } => write!(f, "set-state {state}"),
            RegistryCommand::SetTags { tags } => write!(f, "set-tags {tags:?}"),
            RegistryCommand::DropKeyspace { keyspace } => write!(f, "drop-keyspace {keyspace}"),
            RegistryCommand::Fence {
                token, until_ms, ..
            } => {
                write!(f, "fence token={token} until_ms={until_ms}")
            }
            RegistryCommand::Unfence { token } => write!(f, "unfence token={token}"),
            RegistryCommand::Retire => write!(f, "retire"),
        }
    }
}
