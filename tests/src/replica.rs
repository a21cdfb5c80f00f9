//! A streaming replica of a test cluster (issue 19, read replicas): `pg_basebackup -R`
//! of the primary into a directory of its own, started on its own port as the same OS
//! user, a hot standby (the settings, wal_level included, are the primary's copied
//! postgresql.conf). Dropped: stopped and removed.

use crate::{chown, free_port, pg_bindir, register_cleanup, run, server_user, Cluster, DB, TEMP_COUNTER};
use anyhow::{bail, Context, Result};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Replica {
    pub dir: PathBuf,
    pub port: u16,
    user: Option<(u32, u32, String)>,
}

impl Replica {
    /// A new replica of `primary`, started and consistent (it answers reads).
    pub fn of(primary: &Cluster) -> Result<Replica> {
        // Replication connections match `replication` in pg_hba.conf, not `all`.
        let hba = primary.data().join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba)?;
        if !text.contains("host replication") {
            let me = crate::os_user();
            let mut add = String::from("\n# streaming replicas (tests/src/replica.rs)\n");
            for who in ["postgres", me.as_str()] {
                add.push_str(&format!("host replication \"{who}\" 127.0.0.1/32 trust\n"));
            }
            std::io::Write::write_all(&mut std::fs::OpenOptions::new().append(true).open(&hba)?, add.as_bytes())?;
            primary.connect("postgres", "postgres")?.batch_execute("select pg_reload_conf()")?;
        }
        let dir = std::env::temp_dir().join(format!(
            "pgbaas-replica-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let dir = dir.canonicalize()?;
        let user = server_user();
        if let Some((uid, gid, _)) = &user {
            chown(&dir, *uid, *gid)?;
        }
        let r = Replica { dir, port: free_port(), user };
        run(
            r.cmd("pg_basebackup")
                .arg("-D")
                .arg(r.data())
                .args(["-R", "-X", "stream", "-c", "fast", "-h", "127.0.0.1", "-U", "postgres"])
                .args(["-p", &primary.port.to_string()]),
            "pg_basebackup",
        )?;
        register_cleanup(r.dir.clone(), r.data(), r.user.clone());
        r.start()?;
        Ok(r)
    }

    fn cmd(&self, bin: &str) -> Command {
        let mut c = Command::new(pg_bindir().join(bin));
        if let Some((uid, gid, _)) = &self.user {
            c.uid(*uid).gid(*gid);
        }
        c.env_remove("PGDATA").env("LC_ALL", "C.UTF-8");
        c
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Start it (again) and wait until it takes connections.
    pub fn start(&self) -> Result<()> {
        let sockdir = self.dir.join("run");
        std::fs::create_dir_all(&sockdir)?;
        if let Some((uid, gid, _)) = &self.user {
            chown(&sockdir, *uid, *gid)?;
        }
        let opts = format!("-p {} -k {} -c hot_standby=on", self.port, sockdir.display());
        run(
            self.cmd("pg_ctl").arg("-D").arg(self.data()).arg("-l").arg(self.dir.join("postgres.log")).args(["-o", &opts, "-w", "-t", "60", "start"]),
            "pg_ctl start (replica)",
        )
        .map_err(|e| {
            let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
            anyhow::anyhow!("{e}\npostgres.log:\n{log}")
        })?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.connect("postgres", DB) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Stop it (fast); `start` brings it back.
    pub fn stop(&self) -> Result<()> {
        let status = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("pg_ctl stop (replica) failed: {status}");
        }
        Ok(())
    }

    pub fn url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }

    pub fn connect(&self, user: &str, db: &str) -> Result<postgres::Client> {
        let url = self.url(user, db);
        postgres::Client::connect(&url, postgres::NoTls).with_context(|| format!("connecting to {url}"))
    }

    /// The URL the proxy reads through: the primary's authenticator URL with this
    /// replica's port (the role and its password are replicated).
    pub fn authenticator_url(&self, primary: &Cluster) -> Result<String> {
        let url = primary.authenticator_url()?;
        let from = format!("@127.0.0.1:{}/", primary.port);
        if !url.contains(&from) {
            bail!("unexpected authenticator URL shape");
        }
        Ok(url.replace(&from, &format!("@127.0.0.1:{}/", self.port)))
    }

    /// Stop applying WAL (it is still received): the replica's reads stay at this point.
    pub fn pause_replay(&self) -> Result<()> {
        let mut c = self.connect("postgres", DB)?;
        c.batch_execute("select pg_wal_replay_pause()")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.query_one("select pg_get_wal_replay_pause_state()", &[])?.get::<_, String>(0) != "paused" {
            if Instant::now() > deadline {
                bail!("replay did not pause");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    pub fn resume_replay(&self) -> Result<()> {
        self.connect("postgres", DB)?.batch_execute("select pg_wal_replay_resume()")?;
        Ok(())
    }

    /// Wait until this replica has replayed everything the primary had written when
    /// called.
    pub fn catch_up(&self, primary: &Cluster) -> Result<()> {
        let target: String = primary.connect("postgres", DB)?.query_one("select pg_current_wal_insert_lsn()::text", &[])?.get(0);
        let mut c = self.connect("postgres", DB)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let done: bool = c.query_one("select pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &[&target])?.get(0);
            if done {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the replica did not replay up to {target} in 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
