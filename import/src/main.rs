//! `pgbaas-import parse --from <Parse Server's database URL> --to <pgbaas database URL>`
//! (issue 21, docs/parse.md): moves a Parse Server app (Parse Server on Postgres) into
//! pgbaas — users with their bcrypt hashes and usernames, roles with their users and
//! child roles, and every class's objects with their ACLs — so that the app's SDKs,
//! pointed at pgbaas's Parse door, find their data and their users sign in with their
//! old passwords.
//!
//! Ids: pgbaas ids are UUIDs, Parse's objectIds are not. Each object (and user) gets
//! the UUID made from its class and objectId (`parse::parse_uuid`): the same on every
//! run, so an import can be run again, or resumed after a failure, and skips what is
//! there; pointers are rewritten with the same function, and anyone holding an old
//! objectId can compute the new id (docs/parse.md).
//!
//! The target connection must be a superuser's (or a role with BYPASSRLS): it writes
//! documents with their original times as a restore does (`row_security = off`, which
//! `baas.documents`' forced row-level security allows only to those), then rebuilds the
//! counting entries (`baas.rebuild_index_entries`).

mod parse;

use anyhow::{bail, Context, Result};

fn main() {
    if let Err(e) = run() {
        eprintln!("pgbaas-import: {e:#}");
        std::process::exit(1);
    }
}

const USAGE: &str = "usage: pgbaas-import parse --from <Parse Server database URL> --to <pgbaas database URL (a DBA)> [--sessions] [--files-from <Parse Server's files URL> --files-url <the Parse door's files URL> [--files-bucket <bucket>]] [--dry-run]";

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(source) = args.first() else { bail!("{USAGE}") };
    if source != "parse" {
        bail!("unknown source {source:?}; {USAGE}");
    }
    let (mut from, mut to, mut dry_run, mut sessions) = (None, None, false, false);
    let (mut files_from, mut files_url, mut bucket) = (None, None, "parse_files".to_string());
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--from" => {
                from = args.get(i + 1).cloned();
                i += 1;
            }
            "--to" => {
                to = args.get(i + 1).cloned();
                i += 1;
            }
            "--files-from" | "--files-url" | "--files-bucket" => {
                let v = args.get(i + 1).cloned().with_context(|| format!("{} needs a value; {USAGE}", args[i]))?;
                match args[i].as_str() {
                    "--files-from" => files_from = Some(v),
                    "--files-url" => files_url = Some(v),
                    _ => bucket = v,
                }
                i += 1;
            }
            "--dry-run" => dry_run = true,
            "--sessions" => sessions = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
        i += 1;
    }
    let from = from.context(USAGE)?;
    let to = to.context(USAGE)?;
    let mut src = postgres::Client::connect(&from, postgres::NoTls).context("connecting to the Parse Server database (--from)")?;
    let mut dst = postgres::Client::connect(&to, postgres::NoTls).context("connecting to the pgbaas database (--to)")?;
    let files = match (files_from, files_url) {
        (Some(from), Some(to)) => Some(parse::Files { from: from.trim_end_matches('/').to_string(), to: to.trim_end_matches('/').to_string(), bucket }),
        (None, None) => None,
        _ => bail!("--files-from and --files-url go together; {USAGE}"),
    };
    let report = parse::import(&mut src, &mut dst, dry_run, sessions, files.as_ref())?;
    print!("{report}");
    Ok(())
}
