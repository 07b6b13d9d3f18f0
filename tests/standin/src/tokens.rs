//! Authorization codes and token pairs with Procore's rules: codes live ten minutes
//! and work once; refresh tokens last until used, and using one retires it together
//! with its access token.

use std::collections::HashMap;

use rand::distributions::{Alphanumeric, DistString};
use serde_json::{json, Value};

pub const CODE_TTL_S: u64 = 600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub created_at: u64,
}

impl TokenPair {
    pub fn to_json(&self) -> Value {
        json!({
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "created_at": self.created_at,
        })
    }
}

#[derive(Debug, Clone)]
struct AccessToken {
    login: String,
    created_at: u64,
    expires_at: u64,
    revoked: bool,
    refresh_token: String,
}

#[derive(Debug, Clone)]
struct RefreshToken {
    login: String,
    access_token: String,
    /// Used or revoked: either way it never works again.
    retired: bool,
}

#[derive(Debug, Clone)]
struct Code {
    login: String,
    redirect_uri: String,
    expires_at: u64,
    used: bool,
}

/// A token's owner and remaining life, for `/oauth/token/info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub login: String,
    pub expires_in_seconds: u64,
    pub created_at: u64,
}

#[derive(Debug, Default)]
pub struct Tokens {
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    codes: HashMap<String, Code>,
    /// Everything ever issued, kept across world resets so leak checks see old secrets too.
    issued: Vec<String>,
}

fn random_string(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), len)
}

impl Tokens {
    /// Forgets every code and token but remembers them as issued secrets.
    pub fn forget_all(&mut self) {
        self.access.clear();
        self.refresh.clear();
        self.codes.clear();
    }

    pub fn issued_secrets(&self) -> &[String] {
        &self.issued
    }

    /// A secret that was not minted here but must never leak either (a webhook hook's
    /// Authorization value), listed with the issued ones.
    pub fn remember_secret(&mut self, secret: &str) {
        if !secret.is_empty() && !self.issued.iter().any(|s| s == secret) {
            self.issued.push(secret.to_string());
        }
    }

    pub fn mint_code(&mut self, login: &str, redirect_uri: &str, now: u64) -> String {
        let code = random_string(32);
        self.codes.insert(
            code.clone(),
            Code {
                login: login.to_string(),
                redirect_uri: redirect_uri.to_string(),
                expires_at: now + CODE_TTL_S,
                used: false,
            },
        );
        self.issued.push(code.clone());
        code
    }

    pub fn issue(&mut self, login: &str, now: u64, ttl: u64) -> TokenPair {
        let pair = TokenPair {
            access_token: random_string(48),
            refresh_token: random_string(48),
            expires_in: ttl,
            created_at: now,
        };
        self.access.insert(
            pair.access_token.clone(),
            AccessToken {
                login: login.to_string(),
                created_at: now,
                expires_at: now.saturating_add(ttl),
                revoked: false,
                refresh_token: pair.refresh_token.clone(),
            },
        );
        self.refresh.insert(
            pair.refresh_token.clone(),
            RefreshToken {
                login: login.to_string(),
                access_token: pair.access_token.clone(),
                retired: false,
            },
        );
        self.issued.push(pair.access_token.clone());
        self.issued.push(pair.refresh_token.clone());
        pair
    }

    pub fn exchange_code(
        &mut self,
        code: &str,
        redirect_uri: &str,
        now: u64,
        ttl: u64,
    ) -> Result<(String, TokenPair), &'static str> {
        let entry = self
            .codes
            .get_mut(code)
            .ok_or("The authorization code is unknown.")?;
        if entry.used {
            return Err("The authorization code has already been used.");
        }
        if now >= entry.expires_at {
            return Err("The authorization code has expired.");
        }
        if entry.redirect_uri != redirect_uri {
            return Err("The redirect_uri does not match the one the code was issued for.");
        }
        entry.used = true;
        let login = entry.login.clone();
        let pair = self.issue(&login, now, ttl);
        Ok((login, pair))
    }

    pub fn refresh(
        &mut self,
        refresh_token: &str,
        now: u64,
        ttl: u64,
    ) -> Result<(String, TokenPair), &'static str> {
        let entry = self
            .refresh
            .get_mut(refresh_token)
            .ok_or("The refresh token is unknown.")?;
        if entry.retired {
            return Err("The refresh token has been used or revoked.");
        }
        entry.retired = true;
        let login = entry.login.clone();
        let old_access = entry.access_token.clone();
        if let Some(access) = self.access.get_mut(&old_access) {
            access.revoked = true;
        }
        let pair = self.issue(&login, now, ttl);
        Ok((login, pair))
    }

    /// The login behind a live access token.
    pub fn authenticate(&self, access_token: &str, now: u64) -> Result<&str, &'static str> {
        let token = self
            .access
            .get(access_token)
            .ok_or("The access token is invalid.")?;
        if token.revoked {
            return Err("The access token was revoked.");
        }
        if now >= token.expires_at {
            return Err("The access token expired.");
        }
        Ok(&token.login)
    }

    pub fn info(&self, access_token: &str, now: u64) -> Result<TokenInfo, &'static str> {
        self.authenticate(access_token, now)?;
        let token = self
            .access
            .get(access_token)
            .ok_or("The access token is invalid.")?;
        Ok(TokenInfo {
            login: token.login.clone(),
            expires_in_seconds: token.expires_at.saturating_sub(now),
            created_at: token.created_at,
        })
    }

    /// Whose token or code this is, valid or not (fault rules match on the login).
    pub fn login_of(&self, secret: &str) -> Option<&str> {
        if let Some(t) = self.access.get(secret) {
            return Some(&t.login);
        }
        if let Some(t) = self.refresh.get(secret) {
            return Some(&t.login);
        }
        self.codes.get(secret).map(|c| c.login.as_str())
    }

    /// Revokes the pair that `token` (access or refresh) belongs to.
    pub fn revoke_token(&mut self, token: &str) -> bool {
        let refresh = match self.access.get(token) {
            Some(access) => access.refresh_token.clone(),
            None => token.to_string(),
        };
        let Some(entry) = self.refresh.get_mut(&refresh) else {
            return false;
        };
        entry.retired = true;
        let access = entry.access_token.clone();
        if let Some(a) = self.access.get_mut(&access) {
            a.revoked = true;
        }
        true
    }

    /// Revokes every token of a login; returns how many pairs were live.
    pub fn revoke_login(&mut self, login: &str) -> usize {
        let mut live = 0;
        for token in self.refresh.values_mut().filter(|t| t.login == login) {
            if !token.retired {
                live += 1;
            }
            token.retired = true;
        }
        for token in self.access.values_mut().filter(|t| t.login == login) {
            token.revoked = true;
        }
        live
    }

    /// Expires every access token of a login now; their refresh tokens keep working.
    pub fn expire_login(&mut self, login: &str, now: u64) -> usize {
        let mut expired = 0;
        for token in self.access.values_mut().filter(|t| t.login == login) {
            if token.expires_at > now {
                token.expires_at = now;
                expired += 1;
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_work_once_with_their_redirect_uri_within_ten_minutes() {
        let mut t = Tokens::default();
        let code = t.mint_code("user-1", "http://app/cb", 1000);
        assert!(t.exchange_code(&code, "http://other/cb", 1001, 60).is_err());
        let (login, pair) = t.exchange_code(&code, "http://app/cb", 1001, 60).unwrap();
        assert_eq!(login, "user-1");
        assert_eq!((pair.expires_in, pair.created_at), (60, 1001));
        assert!(t.exchange_code(&code, "http://app/cb", 1002, 60).is_err());
        let late = t.mint_code("user-1", "http://app/cb", 1000);
        assert!(t
            .exchange_code(&late, "http://app/cb", 1000 + CODE_TTL_S, 60)
            .is_err());
        assert!(t.exchange_code("nope", "http://app/cb", 1000, 60).is_err());
    }

    #[test]
    fn refresh_rotates_and_retires_the_old_pair() {
        let mut t = Tokens::default();
        let first = t.issue("user-2", 0, 100);
        assert_eq!(t.authenticate(&first.access_token, 50), Ok("user-2"));
        let (_, second) = t.refresh(&first.refresh_token, 60, 100).unwrap();
        assert_ne!(first.refresh_token, second.refresh_token);
        assert!(t.refresh(&first.refresh_token, 61, 100).is_err());
        assert!(t.authenticate(&first.access_token, 61).is_err());
        assert_eq!(t.authenticate(&second.access_token, 61), Ok("user-2"));
        assert!(
            t.authenticate(&second.access_token, 160).is_err(),
            "expired"
        );
        let (_, third) = t.refresh(&second.refresh_token, 200, 100).unwrap();
        assert!(t.authenticate(&third.access_token, 201).is_ok());
        assert_eq!(t.issued_secrets().len(), 6);
    }

    #[test]
    fn revoke_and_expire_by_login() {
        let mut t = Tokens::default();
        let a = t.issue("user-1", 0, 100);
        let b = t.issue("user-2", 0, 100);
        assert_eq!(t.expire_login("user-1", 10), 1);
        assert!(t.authenticate(&a.access_token, 10).is_err());
        let (_, a2) = t.refresh(&a.refresh_token, 10, 100).unwrap();
        assert_eq!(t.revoke_login("user-1"), 1);
        assert!(t.authenticate(&a2.access_token, 11).is_err());
        assert!(t.refresh(&a2.refresh_token, 11, 100).is_err());
        assert!(t.authenticate(&b.access_token, 11).is_ok());
        assert!(t.revoke_token(&b.access_token));
        assert!(t.refresh(&b.refresh_token, 12, 100).is_err());
        assert!(!t.revoke_token("unknown"));
        assert_eq!(t.login_of(&b.refresh_token), Some("user-2"));
        t.forget_all();
        assert!(t.login_of(&b.refresh_token).is_none());
        assert_eq!(t.issued_secrets().len(), 6);
    }

    #[test]
    fn info_reports_remaining_life() {
        let mut t = Tokens::default();
        let a = t.issue("user-4", 100, 5400);
        let info = t.info(&a.access_token, 400).unwrap();
        assert_eq!(info.expires_in_seconds, 5100);
        assert_eq!(info.login, "user-4");
    }
}
