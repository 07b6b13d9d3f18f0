-- Operator alerts: what is failing now (one streak per user, job and the queue), every alert
-- raised, and each message's delivery per channel. The `procore_sync alerts` worker turns
-- alerts into messages (a digest for a burst) and sends them; retention deletes the old.

-- The state the alert policies weigh the next observation against, per subject:
-- 'user:<uuid>' (healthy, failing, must_reconnect), 'job:<jobid>' (failed_runs in a row)
-- and 'queue' (draining, stalled).
CREATE TABLE procore_sync_alert_streak (
    subject     text PRIMARY KEY,
    state       text NOT NULL,
    failed_runs integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every alert raised; `details` holds what the message will say. `composed_at` is set once
-- the alert went into a message, alone or in a digest, whether or not a channel is set.
CREATE TABLE procore_sync_alert (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,
    subject     text NOT NULL,
    details     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    composed_at timestamptz
);
CREATE INDEX procore_sync_alert_uncomposed ON procore_sync_alert (created_at)
    WHERE composed_at IS NULL;
CREATE INDEX procore_sync_alert_created_at ON procore_sync_alert (created_at);

-- One message on one channel. `status`: pending until sent (or until its next try, after
-- a failed one), sent, or failed once the retries ran out, with the last error.
CREATE TABLE procore_sync_alert_delivery (
    id              bigserial PRIMARY KEY,
    alert_ids       bigint[] NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('email', 'webhook')),
    subject         text NOT NULL,
    body            text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz,
    last_error      text
);
CREATE INDEX procore_sync_alert_delivery_due ON procore_sync_alert_delivery (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX procore_sync_alert_delivery_finished_at ON procore_sync_alert_delivery (finished_at);
