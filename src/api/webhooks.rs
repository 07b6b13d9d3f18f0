//! Procore webhooks from SQL: the receiver any HTTP front can call (PostgREST or Supabase
//! RPC, an application's own API, or the built-in listener), and registering or removing a
//! company's hook.

use chrono::{TimeDelta, Utc};
use pgrx::prelude::*;

use crate::data::{catalog, credentials, jobs, webhooks};
use crate::errors::{required, OrRaise, SyncError};
use crate::procore::Client;
use crate::settings;
use crate::sync::alerts;
use crate::sync::counters::CountedClient;
use crate::sync::webhooks::receive;
use procore_sync_core::procore::hooks::DeliveryStatus;
use procore_sync_core::webhooks::{new_authorization_secret, triggers_for};

/// The namespace the extension's hooks are created in: Procore advises `<publisher>-<app>`.
const HOOK_NAMESPACE: &str = "procore-sync";

/// Records one webhook delivery and returns at once: `recorded`, `duplicate` (delivered
/// before) or `dropped` (a resource the catalog does not sync; counted in
/// `procore_sync_webhooks`). A wrong `authorization` raises 28000, a payload that is not a
/// Procore event 22023, a full inbox 53000.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn procore_sync_webhook(payload: Option<pgrx::JsonB>, authorization: Option<&str>) -> String {
    let payload = required(payload, "payload");
    receive(&payload.0, authorization)
        .or_raise()
        .as_str()
        .to_string()
}

/// Registers a hook for the company with the user's token: events of every enabled catalog
/// resource Procore announces are POSTed to `destination_url` with a generated secret as
/// their `Authorization`. Returns Procore's hook id. A company has one hook: enabling again
/// replaces it.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn procore_sync_webhooks_enable(
    user_id: Option<pgrx::Uuid>,
    company_id: Option<i64>,
    destination_url: Option<&str>,
) -> i64 {
    let user = required(user_id, "user_id").to_string();
    let company_id = required(company_id, "company_id");
    let destination_url = required(destination_url, "destination_url");
    let token = usable_token(&user).or_raise();
    let enabled: Vec<String> = catalog::enabled_resources()
        .or_raise()
        .into_iter()
        .map(|r| r.name)
        .collect();
    let triggers = triggers_for(enabled.iter().map(String::as_str));
    if triggers.is_empty() {
        SyncError::InvalidArgument(
            "no enabled catalog resource is one Procore sends webhook events for".into(),
        )
        .raise();
    }
    let counted = CountedClient::new(Client::new(settings::client_config()).or_raise());
    let client = &counted.client;
    let previous = webhooks::hook(company_id).or_raise();
    let secret = new_authorization_secret();
    let hook = client
        .create_hook(&token, company_id, HOOK_NAMESPACE, destination_url, &secret)
        .0
        .or_raise();
    let created = client
        .create_triggers(&token, hook.id, company_id, &triggers)
        .0;
    let refused = match created {
        Ok(done) if done.failed.is_empty() => None,
        Ok(done) => Some(format!(
            "Procore refused {} of {} triggers: {}",
            done.failed.len(),
            triggers.len(),
            done.failed[0].reason
        )),
        Err(e) => Some(e.to_string()),
    };
    if let Some(reason) = refused {
        // Half a hook would deliver some resources and not others: none is clearer.
        let _ = client.delete_hook(&token, company_id, hook.id);
        SyncError::InvalidArgument(format!("the hook was not registered: {reason}")).raise();
    }
    if let Some(old) = previous.filter(|old| old.hook_id != hook.id) {
        if let Err(e) = client.delete_hook(&token, company_id, old.hook_id).0 {
            warning!(
                "procore_sync: could not delete company {company_id}'s previous hook {} at Procore: {e}",
                old.hook_id
            );
        }
    }
    webhooks::save_hook(
        company_id,
        hook.id,
        &user,
        destination_url,
        &secret,
        &triggers,
    )
    .or_raise();
    jobs::schedule_job(
        webhooks::BACKSTOP_JOB,
        webhooks::BACKSTOP_SCHEDULE,
        webhooks::BACKSTOP_COMMAND,
    )
    .or_raise();
    hook.id
}

/// Removes the company's hook at Procore (with the token of the user who registered it)
/// and here. False when the company has none.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn procore_sync_webhooks_disable(company_id: Option<i64>) -> bool {
    let company_id = required(company_id, "company_id");
    let Some(hook) = webhooks::hook(company_id).or_raise() else {
        return false;
    };
    let removed_at_procore = usable_token(&hook.registered_by).and_then(|token| {
        let counted = CountedClient::new(Client::new(settings::client_config())?);
        Ok(counted
            .client
            .delete_hook(&token, company_id, hook.hook_id)
            .0?)
    });
    if let Err(e) = removed_at_procore {
        warning!(
            "procore_sync: could not delete hook {} of company {company_id} at Procore ({e}); \
             it is forgotten here, and its deliveries are refused from now on",
            hook.hook_id
        );
    }
    let deleted = webhooks::delete_hook(company_id).or_raise();
    webhooks::unschedule_backstop_without_hooks().or_raise();
    deleted
}

/// The backstop, run by the `procore-webhooks-backstop` job: asks Procore for each hook's
/// failing and discarded deliveries since the last reconciliation. Any found means events
/// that may never arrive, so the company's users get a full pass at once. Returns how many
/// companies were reconciled; what each check found shows in `procore_sync_webhooks`.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn procore_sync_webhooks_check() -> i32 {
    let counted = CountedClient::new(Client::new(settings::client_config()).or_raise());
    let client = &counted.client;
    let mut reconciled = 0;
    for hook in webhooks::hooks().or_raise() {
        let company_id = hook.company_id;
        let found = usable_token(&hook.registered_by).and_then(|token| {
            let since = webhooks::covered_until(company_id)?;
            let mut counts = [0i64; 2];
            for (n, status) in [DeliveryStatus::Failing, DeliveryStatus::Discarded]
                .into_iter()
                .enumerate()
            {
                let deliveries = client
                    .list_deliveries(&token, company_id, hook.hook_id, status)
                    .0?;
                counts[n] = deliveries
                    .iter()
                    .filter(|d| match (since, d.completed_at.or(d.started_at)) {
                        (Some(since), Some(at)) => at > since,
                        _ => true,
                    })
                    .count() as i64;
            }
            Ok(counts)
        });
        match found {
            Ok([failing, discarded]) => {
                let reconcile = failing + discarded > 0;
                if reconcile {
                    let users = webhooks::reconcile_company(company_id).or_raise();
                    log!(
                        "procore_sync: hook {} of company {company_id} has {failing} failing and \
                         {discarded} discarded deliveries: {users} user(s) queued for a full pass",
                        hook.hook_id
                    );
                    reconciled += 1;
                }
                webhooks::record_check(company_id, failing, discarded, reconcile, None).or_raise();
                alerts::note_discarded_deliveries(company_id, discarded).or_raise();
            }
            Err(e) => {
                webhooks::record_check(company_id, 0, 0, false, Some(&e.to_string())).or_raise();
            }
        }
    }
    reconciled
}

/// The user's access token, if it is valid for another minute. Refreshing happens in the
/// sync workers, which hold the refresh machinery; a stale token gets a clear error.
fn usable_token(user: &str) -> Result<crate::procore::Secret, SyncError> {
    let stored =
        credentials::credentials(user)?.ok_or_else(|| SyncError::UnknownUser(user.into()))?;
    if stored.needs_reconnect {
        return Err(SyncError::NeedsReconnect {
            user: user.into(),
            reason: stored
                .reconnect_reason
                .unwrap_or_else(|| "credentials were revoked".into()),
        });
    }
    if stored.expires_at <= Utc::now() + TimeDelta::minutes(1) {
        return Err(SyncError::NeedsReconnect {
            user: user.into(),
            reason: "the access token has expired; SELECT * FROM procore_sync_user(...) \
                     refreshes it"
                .into(),
        });
    }
    Ok(stored.access_token)
}
