//! HTTP beside a thread that must not block: a fixed set of threads sharing one [`Client`].
//!
//! A sync worker's main thread is the only one allowed to touch Postgres, and it must keep
//! waking for its latch. It hands requests here and picks up answers; the threads never
//! see Postgres. Threads rather than one readiness loop because the client is blocking
//! `ureq` with rustls (already proven against every fault the tests inject), and a few dozen
//! parked threads cost little next to a second HTTP stack.
//!
//! Memory is bounded by the pool, not by the users in flight: at most `threads` answers
//! are being read and `buffered` wait for the main thread; a thread with an answer waits
//! when the buffer is full, so a slow main thread slows the reading instead of piling up
//! pages.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::procore::{Client, ProcoreError, RateLimit, Secret, TokenPair};
use crate::records::{page_rows, RecordRow};
use crate::token_journal::Journal;
use crate::walk::{Fetch, FetchedPage};

/// Work for the pool. `walk` says whose it is, for the answer.
pub enum Job {
    Page {
        walk: u64,
        fetch: Fetch,
    },
    /// Spends a refresh token. The new pair goes to the journal before the answer is sent,
    /// so it survives the process dying before the main thread commits it.
    Refresh {
        walk: u64,
        user_id: String,
        refresh_token: Secret,
    },
    /// Reads one record's detail endpoint, for a webhook event.
    Record {
        work: u64,
        access_token: Secret,
        company_id: i64,
        path: String,
    },
}

pub enum Answer {
    Page {
        walk: u64,
        fetch: u64,
        result: Result<FetchedPage, ProcoreError>,
        rate_limit: Option<RateLimit>,
    },
    Refresh {
        walk: u64,
        user_id: String,
        result: Result<TokenPair, ProcoreError>,
        /// Why the new pair could not be journalled, to be logged by the main thread.
        journal_error: Option<String>,
    },
    /// The record, or None when Procore has no such record (404).
    Record {
        work: u64,
        result: Result<Option<Vec<RecordRow>>, ProcoreError>,
        rate_limit: Option<RateLimit>,
    },
}

pub struct FetchPool {
    jobs: Option<mpsc::Sender<Job>>,
    answers: Receiver<Answer>,
    outstanding: usize,
}

impl FetchPool {
    /// Starts `threads` threads. They inherit the caller's signal mask: a Postgres worker
    /// starts the pool inside [`blocking_signals`].
    pub fn start(
        client: Arc<Client>,
        journal: Journal,
        threads: usize,
        buffered: usize,
    ) -> std::io::Result<FetchPool> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let (answer, answers) = mpsc::sync_channel::<Answer>(buffered.max(1));
        for n in 0..threads.max(1) {
            let (client, journal, queue, answer) = (
                client.clone(),
                journal.clone(),
                queue.clone(),
                answer.clone(),
            );
            thread::Builder::new()
                .name(format!("procore-fetch-{n}"))
                .spawn(move || serve(&client, &journal, &queue, &answer))?;
        }
        Ok(FetchPool {
            jobs: Some(jobs),
            answers,
            outstanding: 0,
        })
    }

    pub fn submit(&mut self, job: Job) {
        if let Some(jobs) = &self.jobs {
            if jobs.send(job).is_ok() {
                self.outstanding += 1;
            }
        }
    }

    /// Jobs submitted and not answered yet, queued ones included.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// The next answer, waiting at most `timeout`.
    pub fn next_answer(&mut self, timeout: Duration) -> Option<Answer> {
        let answer = if timeout.is_zero() {
            self.answers.try_recv().ok()
        } else {
            self.answers.recv_timeout(timeout).ok()
        };
        if answer.is_some() {
            self.outstanding -= 1;
        }
        answer
    }
}

impl Drop for FetchPool {
    /// Threads finish the request they are on and end; nobody waits for them, since a stalled
    /// request could hold its thread for a whole timeout.
    fn drop(&mut self) {
        self.jobs.take();
    }
}

fn serve(
    client: &Client,
    journal: &Journal,
    queue: &Mutex<Receiver<Job>>,
    answers: &SyncSender<Answer>,
) {
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let answer = match job {
            Job::Page { walk, fetch } => {
                let (result, rate_limit) = client.list_page_and_rate_limit(
                    &fetch.access_token,
                    fetch.company_id,
                    fetch.page.as_request(),
                );
                // Mapping records is CPU work that need not wait for the main thread.
                let result = result.map(|page| FetchedPage {
                    rows: page_rows(page.records).map_err(|e| e.to_string()),
                    next_url: page.next_url,
                });
                Answer::Page {
                    walk,
                    fetch: fetch.id,
                    result,
                    rate_limit,
                }
            }
            Job::Refresh {
                walk,
                user_id,
                refresh_token,
            } => {
                let result = client.refresh_token(&refresh_token);
                let journal_error = match &result {
                    Ok(pair) => journal.record(&user_id, pair).err().map(|e| e.to_string()),
                    Err(_) => None,
                };
                Answer::Refresh {
                    walk,
                    user_id,
                    result,
                    journal_error,
                }
            }
            Job::Record {
                work,
                access_token,
                company_id,
                path,
            } => {
                let (result, rate_limit) = client.fetch_record(&access_token, company_id, &path);
                let result = result.and_then(|record| {
                    record
                        .map(|r| page_rows(vec![r]))
                        .transpose()
                        .map_err(|e| ProcoreError::BadResponse(e.to_string()))
                });
                Answer::Record {
                    work,
                    result,
                    rate_limit,
                }
            }
        };
        if answers.send(answer).is_err() {
            return;
        }
    }
}

/// Runs `start` with every signal blocked in the calling thread, so that threads it spawns
/// inherit the mask: signals then always reach the thread that runs Postgres' handlers.
pub fn blocking_signals<R>(start: impl FnOnce() -> R) -> R {
    // SAFETY: plain libc calls on stack-allocated sigset_t values; the old mask is restored.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let result = start();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;
    use crate::procore::ClientConfig;
    use crate::walk::PageAddress;
    use procore_standin::scripted::{Reply, ScriptedServer as TestServer};

    /// A server answering each page after `delay`, counting requests in progress.
    fn slow_server(delay: Duration) -> (TestServer, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n, p) = (now.clone(), peak.clone());
        let server = TestServer::start(move |request, _| {
            let running = n.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(running, Ordering::SeqCst);
            thread::sleep(delay);
            n.fetch_sub(1, Ordering::SeqCst);
            let id: i64 = request
                .path()
                .trim_start_matches("/p/")
                .parse()
                .unwrap_or(0);
            Reply::json(200, &format!(r#"[{{"id":{id}}}]"#))
        });
        (server, now, peak)
    }

    fn pool(server: &TestServer, threads: usize, buffered: usize) -> FetchPool {
        let mut config =
            ClientConfig::new(server.url(), server.url(), "client", Secret::new("secret"));
        config.allow_http = true;
        let client = Arc::new(Client::new(config).unwrap());
        let journal = Journal::new(std::env::temp_dir().join("procore_sync_pool_test"));
        FetchPool::start(client, journal, threads, buffered).unwrap()
    }

    fn page(walk: u64, id: u64) -> Job {
        Job::Page {
            walk,
            fetch: Fetch {
                id,
                company_id: Some(1),
                page: PageAddress::First {
                    path: format!("/p/{id}"),
                    query: Vec::new(),
                    per_page: None,
                    records_key: None,
                },
                access_token: Secret::new("token"),
            },
        }
    }

    #[test]
    fn requests_run_side_by_side_up_to_the_thread_count_and_all_come_back() {
        let (server, _, peak) = slow_server(Duration::from_millis(100));
        let mut pool = pool(&server, 4, 2);
        let started = Instant::now();
        for id in 1..=12 {
            pool.submit(page(id % 3, id));
        }
        assert_eq!(pool.outstanding(), 12);
        let mut seen = Vec::new();
        while seen.len() < 12 {
            match pool.next_answer(Duration::from_secs(5)) {
                Some(Answer::Page {
                    walk,
                    fetch,
                    result,
                    ..
                }) => {
                    assert_eq!(walk, fetch % 3);
                    let rows = result.expect("page").rows.expect("rows");
                    assert_eq!(
                        rows[0].procore_id, fetch as i64,
                        "answer matched to its job"
                    );
                    seen.push(fetch);
                }
                other => panic!("no answer: {}", other.is_some()),
            }
        }
        assert_eq!(pool.outstanding(), 0);
        assert_eq!(
            peak.load(Ordering::SeqCst),
            4,
            "never more than 4 at once, and 4 reached"
        );
        // Twelve 100 ms requests, four at a time: three rounds, not twelve.
        assert!(started.elapsed() < Duration::from_millis(1100));
    }

    #[test]
    fn a_full_buffer_holds_the_threads_back() {
        let (server, _, _) = slow_server(Duration::ZERO);
        let mut pool = pool(&server, 2, 1);
        for id in 1..=10 {
            pool.submit(page(0, id));
        }
        thread::sleep(Duration::from_millis(500));
        // One answer buffered, one in each thread's hands: the rest were not even sent.
        assert_eq!(server.requests().len(), 3);
        for _ in 0..10 {
            assert!(pool.next_answer(Duration::from_secs(5)).is_some());
        }
        assert_eq!(server.requests().len(), 10);
    }

    #[test]
    fn threads_started_while_blocking_signals_never_take_a_signal() {
        let handle = blocking_signals(|| {
            thread::spawn(|| unsafe {
                let mut mask: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask);
                [libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1, libc::SIGINT]
                    .iter()
                    .all(|&s| libc::sigismember(&mask, s) == 1)
            })
        });
        assert!(handle.join().unwrap(), "a pool thread could take a signal");
        let unblocked_here = unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask);
            libc::sigismember(&mask, libc::SIGTERM) == 0
        };
        assert!(unblocked_here, "the caller's own mask was not restored");
    }
}
