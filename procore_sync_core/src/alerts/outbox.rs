//! Sending alerts off the caller's thread: the extension's scheduler hands deliveries to an
//! [`Outbox`] and picks up how each went on a later pass, so a mail server that takes its
//! full timeout never delays a job. One thread sends them in order; it touches no Postgres.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread;
use std::time::Duration;

use super::compose::Message;
use super::error::AlertError;
use super::smtp::send_email;
use super::webhook::send_webhook;
use crate::fetch_pool::blocking_signals;
use crate::procore::Secret;

/// Where a delivery goes, as the settings say when it is handed over.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    pub smtp_url: Option<Secret>,
    pub email_from: String,
    pub email_to: Vec<String>,
    pub webhook_url: Option<Secret>,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Email,
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }

    pub fn parse(name: &str) -> Option<Channel> {
        match name {
            "email" => Some(Channel::Email),
            "webhook" => Some(Channel::Webhook),
            _ => None,
        }
    }
}

/// One message for one channel, with the id the caller knows it by.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: i64,
    pub channel: Channel,
    pub message: Message,
    pub to: Destinations,
}

/// How one handed-over delivery went.
#[derive(Debug)]
pub struct Sent {
    pub id: i64,
    pub result: Result<(), AlertError>,
}

pub struct Outbox {
    to_sender: Sender<Outgoing>,
    from_sender: Receiver<Sent>,
    in_flight: HashSet<i64>,
}

impl Outbox {
    /// Starts the sending thread with every signal blocked, so that the caller's signal
    /// handlers (Postgres's) keep running on the caller's thread.
    pub fn start() -> std::io::Result<Outbox> {
        let (to_sender, inbox) = mpsc::channel::<Outgoing>();
        let (outcomes, from_sender) = mpsc::channel::<Sent>();
        blocking_signals(|| {
            thread::Builder::new()
                .name("procore_sync alerts".into())
                .spawn(move || {
                    for outgoing in inbox {
                        let result = deliver(&outgoing);
                        if outcomes
                            .send(Sent {
                                id: outgoing.id,
                                result,
                            })
                            .is_err()
                        {
                            break;
                        }
                    }
                })
        })?;
        Ok(Outbox {
            to_sender,
            from_sender,
            in_flight: HashSet::new(),
        })
    }

    /// Hands a delivery over, unless the same id is still being sent. False when it was not
    /// taken (already in flight, or the thread is gone).
    pub fn submit(&mut self, outgoing: Outgoing) -> bool {
        if self.in_flight.contains(&outgoing.id) {
            return false;
        }
        let id = outgoing.id;
        if self.to_sender.send(outgoing).is_err() {
            return false;
        }
        self.in_flight.insert(id);
        true
    }

    /// Whether a delivery with this id is being sent.
    pub fn is_in_flight(&self, id: i64) -> bool {
        self.in_flight.contains(&id)
    }

    /// The deliveries that ended since the last call, without waiting.
    pub fn finished(&mut self) -> Vec<Sent> {
        let mut done = Vec::new();
        loop {
            match self.from_sender.try_recv() {
                Ok(sent) => {
                    self.in_flight.remove(&sent.id);
                    done.push(sent);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return done,
            }
        }
    }
}

fn deliver(outgoing: &Outgoing) -> Result<(), AlertError> {
    let to = &outgoing.to;
    let unset = |setting: &str| AlertError::Config(format!("{setting} is not set any more"));
    match outgoing.channel {
        Channel::Email => send_email(
            to.smtp_url
                .as_ref()
                .ok_or_else(|| unset("procore_sync.smtp_url"))?,
            &to.email_from,
            &to.email_to,
            &outgoing.message,
            to.timeout,
            to.ca_file.as_deref(),
        ),
        Channel::Webhook => send_webhook(
            to.webhook_url
                .as_ref()
                .ok_or_else(|| unset("procore_sync.alert_webhook_url"))?,
            &outgoing.message,
            to.timeout,
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    use serde_json::json;

    use super::*;

    fn message(subject: &str) -> Message {
        Message {
            subject: subject.into(),
            text: "body".into(),
            json: json!({"text": subject}),
            alert_ids: vec![1],
        }
    }

    /// A webhook that answers each POST only once the test lets it (`go`), counting them.
    fn held_webhook(answers: usize) -> (String, mpsc::Sender<()>, thread::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let (go, release) = mpsc::channel::<()>();
        let handle = thread::spawn(move || {
            let mut served = 0;
            for stream in listener.incoming().take(answers) {
                let mut stream = stream.expect("accept");
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer);
                if release.recv().is_err() {
                    break;
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                served += 1;
            }
            served
        });
        (url, go, handle)
    }

    fn wait_for(outbox: &mut Outbox, n: usize) -> Vec<Sent> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut done = Vec::new();
        while done.len() < n && Instant::now() < deadline {
            done.extend(outbox.finished());
            thread::sleep(Duration::from_millis(10));
        }
        done
    }

    #[test]
    fn submitting_never_waits_for_the_server_and_outcomes_come_back_by_id() {
        let (url, go, server) = held_webhook(2);
        let to = Destinations {
            webhook_url: Some(Secret::new(url)),
            timeout: Duration::from_secs(10),
            ..Destinations::default()
        };
        let mut outbox = Outbox::start().expect("start the outbox");
        for id in [7, 8] {
            assert!(outbox.submit(Outgoing {
                id,
                channel: Channel::Webhook,
                message: message("job failing"),
                to: to.clone(),
            }));
        }
        // Both handed over while the server holds its answer: submit did not wait for it.
        assert!(outbox.finished().is_empty());
        assert!(outbox.is_in_flight(7) && outbox.is_in_flight(8));
        assert!(
            !outbox.submit(Outgoing {
                id: 7,
                channel: Channel::Webhook,
                message: message("again"),
                to: to.clone(),
            }),
            "an id in flight is not taken twice"
        );
        go.send(()).expect("release the first answer");
        go.send(()).expect("release the second answer");
        let done = wait_for(&mut outbox, 2);
        let ids: Vec<i64> = done.iter().map(|s| s.id).collect();
        assert_eq!(ids, [7, 8]);
        assert!(done.iter().all(|s| s.result.is_ok()), "{done:?}");
        assert!(!outbox.is_in_flight(7));
        assert_eq!(server.join().expect("server"), 2);
    }

    #[test]
    fn a_channel_whose_setting_went_away_fails_with_a_config_error() {
        let mut outbox = Outbox::start().expect("start the outbox");
        outbox.submit(Outgoing {
            id: 1,
            channel: Channel::Email,
            message: message("x"),
            to: Destinations::default(),
        });
        let done = wait_for(&mut outbox, 1);
        let error = done[0].result.as_ref().expect_err("no SMTP URL");
        assert!(!error.is_retryable());
        assert!(
            error.to_string().contains("procore_sync.smtp_url"),
            "{error}"
        );
    }

    #[test]
    fn channel_names_round_trip() {
        for channel in [Channel::Email, Channel::Webhook] {
            assert_eq!(Channel::parse(channel.as_str()), Some(channel));
        }
        assert_eq!(Channel::parse("pager"), None);
    }
}
