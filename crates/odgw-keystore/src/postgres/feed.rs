//! [`ChangeFeed`]: what other replicas (and this one) changed in a shared
//! store, read from the `changes` table in commit order.
//!
//! A background task per feed holds its own connection (not a pooled one:
//! it must stay subscribed) on which it `LISTEN`s to the store's channel.
//! A notification wakes it early; it also reads the table every
//! `poll_interval`, in case a notification was lost. Both read
//! `changes WHERE seq > last ORDER BY seq`, which misses nothing because
//! writers take their seqs under the store's writer lock (see `PgTxn`).
//!
//! When the connection drops, the task reconnects with backoff and then
//! yields [`Change::Resync`] rather than guessing what happened meanwhile;
//! likewise when the rows after `last` were already pruned.

use std::{
    future::{poll_fn, Future},
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use odgw_core::TenantId;
use tokio::sync::mpsc;
use tokio_postgres::{
    tls::NoTlsStream, AsyncMessage, Client, Connection, NoTls, Socket, Statement,
};

use super::{db_error, Shared};
use crate::StoreError;

/// Rows read per query; a longer backlog is read in several.
pub(super) const POLL_BATCH: i64 = 500;

/// Changes a slow consumer may have waiting before the feed pauses.
const QUEUE: usize = 256;

/// First and longest wait between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One change to a shared store, as a [`ChangeFeed`] yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The tenant was created, replaced, enabled, disabled, deleted or
    /// imported: whatever is cached about it is out of date.
    Tenant(TenantId),
    /// A response-cache purge was announced: of one tenant, or of all
    /// (`None`).
    Purge(Option<TenantId>),
    /// The feed may have missed changes (it lost its connection, or fell
    /// further behind than the change table keeps): drop everything cached
    /// and read again.
    Resync,
}

/// A stream of [`Change`]s of one shared store, in commit order, from
/// about the moment it was made: every change committed after
/// [`crate::PgKeyStore::changes`] returned is delivered. It starts at the
/// newest change its store instance had seen (at connect, by its own
/// writes, or through another feed), so some changes from just before may
/// be delivered too; handling them is harmless. It reconnects by itself;
/// while it cannot reach the database, [`ChangeFeed::next`] simply waits,
/// and the first item after contact is regained is [`Change::Resync`].
pub struct ChangeFeed {
    shared: Arc<Shared>,
    /// `None` until the background task runs.
    rx: Option<mpsc::Receiver<Change>>,
    /// Where the next task starts reading.
    start: i64,
    /// Whether the next task must begin with a resync (it replaces one that
    /// stopped unexpectedly).
    resync: bool,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("schema", &self.shared.schema)
            .field("running", &self.rx.is_some())
            .finish_non_exhaustive()
    }
}

impl ChangeFeed {
    pub(super) fn start(shared: Arc<Shared>) -> Self {
        let start = shared.seen_seq.load(Ordering::Acquire);
        let mut feed = Self {
            shared,
            rx: None,
            start,
            resync: false,
        };
        // Started now when possible, so its first read happens right away;
        // its position is fixed above either way.
        if tokio::runtime::Handle::try_current().is_ok() {
            feed.spawn();
        }
        feed
    }

    fn spawn(&mut self) {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(Arc::clone(&self.shared), self.start, self.resync, tx));
        self.rx = Some(rx);
    }

    /// The next change. Waits as long as nothing changes (or the database
    /// cannot be reached); cancel-safe, so it can sit in a `select!`.
    pub async fn next(&mut self) -> Change {
        loop {
            let rx = match &mut self.rx {
                Some(rx) => rx,
                None => {
                    self.spawn();
                    continue;
                }
            };
            if let Some(change) = rx.recv().await {
                return change;
            }
            // The task only ends when this feed is dropped, so it failed
            // unexpectedly; a new one starts with a resync, after a pause
            // in case it fails the same way at once.
            tracing::error!(schema = %self.shared.schema, "key store change feed stopped unexpectedly; restarting");
            self.rx = None;
            self.resync = true;
            tokio::time::sleep(BACKOFF_MAX).await;
        }
    }
}

/// How following a connection ended.
enum Ended {
    /// The feed was dropped.
    Stopped,
    /// The connection failed; reconnect.
    Lost(StoreError),
}

/// The feed's task: connect, follow, reconnect, until the feed is dropped.
async fn run(shared: Arc<Shared>, mut last: i64, mut resync: bool, tx: mpsc::Sender<Change>) {
    let schema = shared.schema.as_str();
    let mut backoff = BACKOFF_MIN;
    let mut down_since: Option<Instant> = None;
    loop {
        let connected = tokio::select! {
            () = tx.closed() => return,
            connected = Listener::connect(&shared) => connected,
        };
        let ended = match connected {
            Ok(mut listener) => {
                if let Some(since) = down_since.take() {
                    tracing::info!(
                        schema,
                        down_ms = since.elapsed().as_millis() as u64,
                        "key store change feed reconnected"
                    );
                }
                backoff = BACKOFF_MIN;
                listener.follow(&shared, &mut last, &mut resync, &tx).await
            }
            Err(err) => Ended::Lost(err),
        };
        match ended {
            Ended::Stopped => return,
            Ended::Lost(error) => {
                if down_since.is_none() {
                    tracing::warn!(schema, %error, "key store change feed lost contact with postgresql; reconnecting");
                    down_since = Some(Instant::now());
                }
                // Whatever happened while away is unknown.
                resync = true;
            }
        }
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The feed's own connection, subscribed to the store's channel.
struct Listener {
    client: Client,
    connection: Connection<Socket, NoTlsStream>,
    poll: Statement,
    pruned: Statement,
    newest: Statement,
    /// A notification arrived while a query was being driven, perhaps
    /// after that query's snapshot: read the table again before waiting.
    notified: bool,
}

/// What one read of the change table found.
enum Polled {
    /// The next changes after `last`, with their seqs (maybe none).
    Changes(Vec<(i64, Change)>),
    /// Rows after `last` were pruned: resync from `newest`.
    Gap { newest: i64 },
}

impl Listener {
    async fn connect(shared: &Shared) -> Result<Self, StoreError> {
        const CONTEXT: &str = "connecting the change feed";
        let connect = async {
            let (client, mut connection) = shared
                .pg_config
                .connect(NoTls)
                .await
                .map_err(|err| db_error(CONTEXT, err))?;
            let mut notified = false;
            let listen = format!("LISTEN \"{}\"", shared.channel);
            let c = &mut connection;
            drive(c, &mut notified, client.batch_execute(&listen)).await?;
            let poll = drive(c, &mut notified, client.prepare(&shared.sql.poll)).await?;
            let pruned = drive(c, &mut notified, client.prepare(&shared.sql.pruned)).await?;
            let newest = drive(c, &mut notified, client.prepare(&shared.sql.newest)).await?;
            Ok(Self {
                client,
                connection,
                poll,
                pruned,
                newest,
                notified,
            })
        };
        shared.timed(CONTEXT, connect).await
    }

    /// Delivers changes until the connection fails or the feed is dropped.
    async fn follow(
        &mut self,
        shared: &Shared,
        last: &mut i64,
        resync: &mut bool,
        tx: &mpsc::Sender<Change>,
    ) -> Ended {
        if *resync {
            // LISTEN is already active, so whatever commits after this
            // read is both notified and found by the next poll.
            match shared.timed("reading the change feed", self.newest()).await {
                Ok(newest) => *last = newest,
                Err(err) => return Ended::Lost(err),
            }
            if tx.send(Change::Resync).await.is_err() {
                return Ended::Stopped;
            }
            *resync = false;
        }
        let mut tick = tokio::time::interval(shared.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The first tick is immediate: catch up before waiting.
            if !std::mem::take(&mut self.notified) {
                tokio::select! {
                    biased;
                    () = tx.closed() => return Ended::Stopped,
                    message = self.notification() => {
                        if let Err(err) = message {
                            return Ended::Lost(err);
                        }
                    }
                    _ = tick.tick() => {}
                }
            }
            loop {
                let polled = match shared
                    .timed("reading the change feed", self.poll(*last))
                    .await
                {
                    Ok(polled) => polled,
                    Err(err) => return Ended::Lost(err),
                };
                let (changes, more) = match polled {
                    Polled::Gap { newest } => {
                        tracing::warn!(schema = %shared.schema, last = *last, "key store change feed fell behind the kept changes; resyncing");
                        *last = newest;
                        (vec![(newest, Change::Resync)], false)
                    }
                    Polled::Changes(changes) => {
                        let more = changes.len() as i64 >= POLL_BATCH;
                        (changes, more)
                    }
                };
                for (seq, change) in changes {
                    if tx.send(change).await.is_err() {
                        return Ended::Stopped;
                    }
                    *last = seq;
                }
                shared.seen_seq.fetch_max(*last, Ordering::AcqRel);
                if !more {
                    break;
                }
            }
        }
    }

    /// Waits for a notification on the channel (notices are skipped).
    /// Cancel-safe: a message is consumed only when this returns.
    async fn notification(&mut self) -> Result<(), StoreError> {
        loop {
            match poll_fn(|cx| self.connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(db_error("following the change feed", err)),
                None => return Err(closed()),
            }
        }
    }

    async fn newest(&mut self) -> Result<i64, StoreError> {
        let row = drive(
            &mut self.connection,
            &mut self.notified,
            self.client.query_one(&self.newest, &[]),
        )
        .await?;
        row.try_get(0)
            .map_err(|err| db_error("reading the change feed", err))
    }

    async fn poll(&mut self, last: i64) -> Result<Polled, StoreError> {
        const CONTEXT: &str = "reading the change feed";
        let rows = drive(
            &mut self.connection,
            &mut self.notified,
            self.client.query(&self.poll, &[&last]),
        )
        .await?;
        // Read after the rows: a prune that removed rows the query above
        // should have seen committed before it, so it shows here.
        let pruned: i64 = drive(
            &mut self.connection,
            &mut self.notified,
            self.client.query_one(&self.pruned, &[]),
        )
        .await?
        .try_get(0)
        .map_err(|err| db_error(CONTEXT, err))?;
        if pruned > last {
            return Ok(Polled::Gap {
                newest: self.newest().await?,
            });
        }
        let mut changes = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.try_get(0).map_err(|err| db_error(CONTEXT, err))?;
            let kind: String = row.try_get(1).map_err(|err| db_error(CONTEXT, err))?;
            let tenant: Option<String> = row.try_get(2).map_err(|err| db_error(CONTEXT, err))?;
            let tenant = tenant.map(|t| TenantId::parse(&t));
            let change = match (kind.as_str(), tenant) {
                ("tenant", Some(Ok(id))) => Change::Tenant(id),
                ("purge", None) => Change::Purge(None),
                ("purge", Some(Ok(id))) => Change::Purge(Some(id)),
                // Written by a newer odgw, or edited: the safe reading is
                // "something changed".
                _ => {
                    tracing::warn!(seq, kind, "unrecognized key store change; resyncing");
                    Change::Resync
                }
            };
            changes.push((seq, change));
        }
        Ok(Polled::Changes(changes))
    }
}

/// Runs `request` while driving `connection`, which a tokio-postgres
/// client needs to make progress when its connection is not spawned.
/// Notifications arriving meanwhile set `notified`.
async fn drive<T>(
    connection: &mut Connection<Socket, NoTlsStream>,
    notified: &mut bool,
    request: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    const CONTEXT: &str = "following the change feed";
    let mut request = std::pin::pin!(request);
    loop {
        tokio::select! {
            result = &mut request => return result.map_err(|err| db_error(CONTEXT, err)),
            message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(_))) => *notified = true,
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(db_error(CONTEXT, err)),
                None => return Err(closed()),
            },
        }
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable {
        context: "following the change feed",
        source: "the connection closed".into(),
    }
}
