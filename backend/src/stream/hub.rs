//! In-process fan-out of task notices to each user's live connections, with resume.
//!
//! Event ids are the notices' offsets on `task-updates` (one partition). Every replica reads the
//! whole topic, so an id means the same notice on every replica and a client may resume on
//! another one; the hub keeps only a bounded ring of the latest notices, in memory, to replay
//! from. A client whose `Last-Event-ID` is older than the ring (or unknown here, e.g. after the
//! broker lost its data) is told to resync, that is to reload, instead of being sent a partial
//! history.
//!
//! A process without connections for a while stops reading ([`Hub::try_rest`]): the feed drops
//! its consumer, so an API replica that serves no live client neither fetches nor decodes every
//! notice of every user. The next connection wakes it ([`Hub::wake`]), and it reads on from where
//! it stopped, so the ring still answers the ids it held, unless more than the ring's worth
//! came meanwhile: then it reads only the latest ring's worth ([`Hub::resume_offset`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Notify};

/// One task change for one user, as the stream sends it.
#[derive(Debug, PartialEq, Eq)]
pub struct Notice {
    /// Offset on `task-updates`: the SSE event id.
    pub offset: i64,
    pub user_id: String,
    /// The notice's `data` as JSON (event_type, task_id, version, occurred_at).
    pub data: String,
}

/// How a new connection starts.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// No `Last-Event-ID`: only what comes from now on.
    Fresh,
    /// What this user missed after the given id, oldest first (possibly nothing).
    Replay(Vec<Arc<Notice>>),
    /// The id is not resumable here: the client must reload what it shows.
    Resync,
}

/// A live connection's feed. Dropping it unsubscribes.
pub struct Subscription {
    pub resume: Resume,
    /// The newest offset the hub had seen when subscribing: the id to announce first, so a
    /// client that receives nothing can still resume from here. None before the feed started.
    pub position: Option<i64>,
    /// Notices from now on. Ends (None) when the client fell behind and was dropped.
    pub notices: mpsc::Receiver<Arc<Notice>>,
    hub: Arc<Hub>,
    user_id: String,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.user_id, self.id);
    }
}

pub struct Hub {
    /// Notices a client may have queued; one that falls further behind is dropped.
    client_buffer: usize,
    /// Notices kept for resume.
    replay: usize,
    state: Mutex<State>,
    /// True while the feed rests, and after a wake-up until it has read what came meanwhile.
    resting: watch::Sender<bool>,
    /// A connection arrived while the feed rests.
    demand: Notify,
}

#[derive(Default)]
struct State {
    recent: VecDeque<Arc<Notice>>,
    /// Every notice after this offset is in `recent` (or not consumed yet); None until the feed
    /// has started.
    horizon: Option<i64>,
    /// The newest offset consumed (the horizon while none was).
    latest: Option<i64>,
    clients: HashMap<String, Vec<Client>>,
    next_id: u64,
    /// Since when no connection is open (None while one is).
    empty_since: Option<Instant>,
}

struct Client {
    id: u64,
    tx: mpsc::Sender<Arc<Notice>>,
}

impl Hub {
    pub fn new(client_buffer: usize, replay: usize) -> Arc<Hub> {
        Arc::new(Hub {
            client_buffer: client_buffer.max(1),
            replay,
            state: Mutex::new(State {
                empty_since: Some(Instant::now()),
                ..State::default()
            }),
            resting: watch::Sender::new(false),
            demand: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every step, so a panic elsewhere does not spoil it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the feed reads from, given the partition's offsets now (`low`, the oldest kept, and
    /// `high`, the next to be written): at the end on its first start; on from the last notice
    /// read when at most the ring's worth came since; otherwise the latest ring's worth, which
    /// forgets the ring (see [`Hub::start`]), as does a topic that went back (recreated).
    pub fn resume_offset(&self, low: i64, high: i64) -> i64 {
        match self.lock().latest {
            Some(latest) if latest < high => {
                if high - (latest + 1) <= self.replay as i64 {
                    latest + 1
                } else {
                    (high - self.replay as i64).max(low)
                }
            }
            _ => high,
        }
    }

    /// The feed reads from `next_offset` on. A restart elsewhere than where it left off (the
    /// topic was recreated, or the feed reconnected after a gap) forgets what came before.
    pub fn start(&self, next_offset: i64) {
        let mut state = self.lock();
        match state.latest {
            // Connections made before the first start have missed nothing: they stay.
            None => {
                state.horizon = Some(next_offset - 1);
                state.latest = Some(next_offset - 1);
            }
            Some(latest) if latest == next_offset - 1 => {}
            Some(_) => state.reset(next_offset - 1),
        }
    }

    /// Record a notice and hand it to its user's connections; a connection whose buffer is
    /// full is dropped (it reconnects and resumes), so a slow client never holds up the others.
    pub fn publish(&self, notice: Notice) {
        let mut state = self.lock();
        if state.latest.is_some_and(|latest| notice.offset <= latest) {
            // Offsets went back: the topic was recreated. Old ids mean nothing any more.
            state.reset(notice.offset - 1);
        }
        let notice = Arc::new(notice);
        state.latest = Some(notice.offset);
        state.horizon.get_or_insert(notice.offset - 1);
        state.recent.push_back(notice.clone());
        while state.recent.len() > self.replay {
            if let Some(evicted) = state.recent.pop_front() {
                state.horizon = Some(evicted.offset);
            }
        }
        if let Some(clients) = state.clients.get_mut(&notice.user_id) {
            clients.retain(|c| c.tx.try_send(notice.clone()).is_ok());
            if clients.is_empty() {
                state.clients.remove(&notice.user_id);
                state.note_if_empty();
            }
        }
    }

    /// The feed has read everything that was on the partition when it (re)connected.
    pub fn caught_up(&self) {
        self.resting.send_if_modified(std::mem::take);
    }

    /// Whether the feed should stop reading: no connection has been open for `after` (zero:
    /// never). When it says yes, the next connection wakes the feed ([`Hub::wanted`]).
    pub fn try_rest(&self, after: Duration) -> bool {
        let state = self.lock();
        let quiet = !after.is_zero()
            && state
                .empty_since
                .is_some_and(|since| since.elapsed() >= after);
        if quiet {
            // Under the lock: a connection arriving now sees the feed resting and wakes it.
            self.resting.send_replace(true);
        }
        quiet
    }

    /// Resolves once a connection wants the resting feed to read again.
    pub async fn wanted(&self) {
        self.demand.notified().await;
    }

    /// Before a connection subscribes: wake a resting feed and wait (at most `wait`) until it
    /// has read what came while it rested, so that the connection's resume sees it all.
    pub async fn wake(&self, wait: Duration) {
        let mut resting = self.resting.subscribe();
        if !*resting.borrow_and_update() {
            return;
        }
        {
            // A wake-up counts as a connection: the feed must not rest again before it comes.
            let mut state = self.lock();
            if state.empty_since.is_some() {
                state.empty_since = Some(Instant::now());
            }
        }
        self.demand.notify_one();
        let _ = tokio::time::timeout(wait, resting.wait_for(|resting| !*resting)).await;
    }

    /// A new connection of `user_id`, resuming after `last_event_id` when given.
    pub fn subscribe(self: &Arc<Self>, user_id: &str, last_event_id: Option<&str>) -> Subscription {
        let (tx, notices) = mpsc::channel(self.client_buffer);
        let mut state = self.lock();
        let resume = match last_event_id.map(|id| id.trim().parse::<i64>()) {
            None => Resume::Fresh,
            Some(Ok(after)) => match (state.horizon, state.latest) {
                (Some(horizon), Some(latest)) if (horizon..=latest).contains(&after) => {
                    Resume::Replay(
                        state
                            .recent
                            .iter()
                            .filter(|n| n.offset > after && n.user_id == user_id)
                            .cloned()
                            .collect(),
                    )
                }
                _ => Resume::Resync,
            },
            Some(Err(_)) => Resume::Resync,
        };
        state.next_id += 1;
        let id = state.next_id;
        state
            .clients
            .entry(user_id.to_owned())
            .or_default()
            .push(Client { id, tx });
        state.empty_since = None;
        if *self.resting.borrow() {
            // It went to rest after this connection's wake (or the caller did not wake it): what
            // the feed reads on from here still reaches this connection, in order.
            self.demand.notify_one();
        }
        Subscription {
            resume,
            position: state.latest,
            notices,
            hub: self.clone(),
            user_id: user_id.to_owned(),
            id,
        }
    }

    fn unsubscribe(&self, user_id: &str, id: u64) {
        let mut state = self.lock();
        if let Some(clients) = state.clients.get_mut(user_id) {
            clients.retain(|c| c.id != id);
            if clients.is_empty() {
                state.clients.remove(user_id);
                state.note_if_empty();
            }
        }
    }

    /// Open connections, over all users.
    pub fn connections(&self) -> usize {
        self.lock().clients.values().map(Vec::len).sum()
    }
}

impl State {
    /// Forget the ring and every connection (their ids are void); the next offset is `before + 1`.
    fn reset(&mut self, before: i64) {
        self.recent.clear();
        self.clients.clear();
        self.note_if_empty();
        self.horizon = Some(before);
        self.latest = Some(before);
    }

    fn note_if_empty(&mut self) {
        if self.clients.is_empty() && self.empty_since.is_none() {
            self.empty_since = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(offset: i64, user: &str) -> Notice {
        Notice {
            offset,
            user_id: user.to_owned(),
            data: format!("{{\"n\":{offset}}}"),
        }
    }

    fn offsets(rx: &mut mpsc::Receiver<Arc<Notice>>) -> Vec<i64> {
        let mut got = Vec::new();
        while let Ok(n) = rx.try_recv() {
            got.push(n.offset);
        }
        got
    }

    fn replayed(resume: &Resume) -> Vec<i64> {
        match resume {
            Resume::Replay(notices) => notices.iter().map(|n| n.offset).collect(),
            other => panic!("expected a replay, got {other:?}"),
        }
    }

    #[test]
    fn notices_reach_only_their_users_connections() {
        let hub = Hub::new(8, 100);
        hub.start(0);
        let mut a1 = hub.subscribe("alice", None);
        let mut a2 = hub.subscribe("alice", None);
        let mut b = hub.subscribe("bob", None);
        hub.publish(notice(0, "alice"));
        hub.publish(notice(1, "bob"));
        hub.publish(notice(2, "alice"));
        assert_eq!(offsets(&mut a1.notices), [0, 2]);
        assert_eq!(offsets(&mut a2.notices), [0, 2]);
        assert_eq!(offsets(&mut b.notices), [1]);
    }

    #[test]
    fn a_slow_client_is_dropped_and_the_others_get_everything() {
        let hub = Hub::new(2, 100);
        hub.start(0);
        let mut slow = hub.subscribe("alice", None);
        let mut fast = hub.subscribe("alice", None);
        for offset in 0..5 {
            hub.publish(notice(offset, "alice"));
            // The fast one reads as it goes; the slow one never does.
            assert_eq!(offsets(&mut fast.notices), [offset]);
        }
        assert_eq!(hub.connections(), 1, "the slow connection was dropped");
        // It gets what fitted in its buffer, then its feed ends: the client reconnects.
        assert_eq!(offsets(&mut slow.notices), [0, 1]);
        assert!(slow.notices.try_recv().is_err());
        assert!(slow.notices.is_closed());
        assert!(!fast.notices.is_closed());
    }

    #[test]
    fn resume_replays_what_that_user_missed_after_the_id() {
        let hub = Hub::new(8, 100);
        hub.start(10);
        for (offset, user) in [(10, "alice"), (11, "bob"), (12, "alice"), (13, "alice")] {
            hub.publish(notice(offset, user));
        }
        let sub = hub.subscribe("alice", Some("10"));
        assert_eq!(replayed(&sub.resume), [12, 13]);
        assert_eq!(sub.position, Some(13));
        // Up to date: nothing to replay, and live from here.
        let mut current = hub.subscribe("alice", Some("13"));
        assert_eq!(replayed(&current.resume), Vec::<i64>::new());
        hub.publish(notice(14, "alice"));
        assert_eq!(offsets(&mut current.notices), [14]);
        // The announced position before any notice is resumable too.
        assert_eq!(
            replayed(&hub.subscribe("alice", Some("9")).resume),
            [10, 12, 13, 14]
        );
    }

    #[test]
    fn an_id_the_ring_no_longer_covers_means_resync() {
        let hub = Hub::new(8, 2);
        hub.start(0);
        for offset in 0..4 {
            hub.publish(notice(offset, "alice"));
        }
        // 0 and 1 were evicted: from 1 on, everything is still there; before it, not.
        assert_eq!(replayed(&hub.subscribe("alice", Some("1")).resume), [2, 3]);
        assert_eq!(hub.subscribe("alice", Some("0")).resume, Resume::Resync);
        // Ids from the future (the broker lost its data) or not ids at all.
        assert_eq!(hub.subscribe("alice", Some("99")).resume, Resume::Resync);
        assert_eq!(hub.subscribe("alice", Some("x")).resume, Resume::Resync);
        assert_eq!(hub.subscribe("alice", None).resume, Resume::Fresh);
    }

    #[test]
    fn before_the_feed_starts_nothing_is_resumable_but_connections_are_kept() {
        let hub = Hub::new(8, 10);
        let mut sub = hub.subscribe("alice", Some("3"));
        assert_eq!(sub.resume, Resume::Resync);
        assert_eq!(sub.position, None);
        hub.start(4);
        hub.publish(notice(4, "alice"));
        assert_eq!(offsets(&mut sub.notices), [4]);
    }

    #[test]
    fn offsets_going_back_forget_the_ring_and_drop_connections() {
        let hub = Hub::new(8, 10);
        hub.start(5);
        hub.publish(notice(5, "alice"));
        let old = hub.subscribe("alice", None);
        hub.publish(notice(0, "alice"));
        assert!(old.notices.is_closed());
        assert_eq!(hub.subscribe("alice", Some("5")).resume, Resume::Resync);
        assert_eq!(replayed(&hub.subscribe("alice", Some("-1")).resume), [0]);
    }

    #[test]
    fn a_restart_where_the_feed_left_off_keeps_the_ring() {
        let hub = Hub::new(8, 10);
        hub.start(0);
        hub.publish(notice(0, "alice"));
        hub.start(1);
        assert_eq!(replayed(&hub.subscribe("alice", Some("-1")).resume), [0]);
        hub.start(7);
        assert_eq!(hub.subscribe("alice", Some("0")).resume, Resume::Resync);
    }

    #[test]
    fn the_feed_reads_on_from_its_last_notice_unless_more_than_the_ring_came_since() {
        let hub = Hub::new(8, 10);
        // First start: at the end.
        assert_eq!(hub.resume_offset(0, 50), 50);
        hub.start(50);
        hub.publish(notice(50, "alice"));
        // Up to the ring's worth since the last notice read: on from it.
        assert_eq!(hub.resume_offset(0, 51), 51);
        assert_eq!(hub.resume_offset(0, 61), 51);
        // More: the latest ring's worth, or what the broker still keeps of it.
        assert_eq!(hub.resume_offset(0, 62), 52);
        assert_eq!(hub.resume_offset(55, 62), 55);
        // The topic went back (recreated): its end.
        assert_eq!(hub.resume_offset(0, 3), 3);
    }

    #[tokio::test]
    async fn the_feed_rests_after_the_quiet_time_without_connections_and_a_connection_wakes_it() {
        let quiet = Duration::from_millis(30);
        let hub = Hub::new(8, 10);
        hub.start(0);
        assert!(!hub.try_rest(Duration::ZERO), "zero: never");
        let sub = hub.subscribe("alice", None);
        tokio::time::sleep(quiet * 2).await;
        assert!(!hub.try_rest(quiet), "a connection is open");
        drop(sub);
        assert!(!hub.try_rest(quiet), "not quiet for long enough yet");
        tokio::time::sleep(quiet * 2).await;
        assert!(hub.try_rest(quiet));

        // A connection wakes it and waits until it has read what came meanwhile.
        let waking = tokio::spawn({
            let hub = hub.clone();
            async move { hub.wake(Duration::from_secs(10)).await }
        });
        tokio::time::timeout(Duration::from_secs(5), hub.wanted())
            .await
            .expect("the feed is wanted again");
        // Reading again, it does not rest before that connection came.
        assert!(!hub.try_rest(quiet));
        tokio::time::sleep(quiet / 3).await;
        assert!(!waking.is_finished(), "the connection waits for the feed");
        hub.caught_up();
        tokio::time::timeout(Duration::from_secs(5), waking)
            .await
            .expect("caught up: the connection goes on")
            .unwrap();
        // Not resting: a connection goes on at once.
        tokio::time::timeout(
            Duration::from_millis(100),
            hub.wake(Duration::from_secs(10)),
        )
        .await
        .expect("no wait while the feed reads");
    }

    #[tokio::test]
    async fn a_connection_made_while_the_feed_rests_wakes_it_too() {
        let hub = Hub::new(8, 10);
        hub.start(0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(hub.try_rest(Duration::from_millis(10)));
        let mut sub = hub.subscribe("alice", Some("-1"));
        tokio::time::timeout(Duration::from_secs(5), hub.wanted())
            .await
            .expect("the feed is wanted again");
        // What it reads on from where it stopped reaches the connection.
        hub.start(0);
        hub.publish(notice(0, "alice"));
        assert_eq!(offsets(&mut sub.notices), [0]);
    }

    #[test]
    fn dropping_a_subscription_unsubscribes() {
        let hub = Hub::new(8, 10);
        let a = hub.subscribe("alice", None);
        let b = hub.subscribe("alice", None);
        assert_eq!(hub.connections(), 2);
        drop(a);
        assert_eq!(hub.connections(), 1);
        drop(b);
        assert_eq!(hub.connections(), 0);
    }
}
