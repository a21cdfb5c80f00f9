//! Method + path -> route. Unknown paths are 404, known paths with another method 405.

use http::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Jwks,
    Signup,
    Login,
    Refresh,
    Logout,
    GetUser,
    UpdateUser,
    DeleteUser,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Match {
    Found(Route),
    /// The path exists; these methods are allowed on it.
    WrongMethod(&'static str),
    NotFound,
}

pub fn route(method: &Method, path: &str) -> Match {
    use Route::*;
    let table: &[(&Method, Route)] = match path {
        "/healthz" => &[(&Method::GET, Health)],
        "/.well-known/jwks.json" => &[(&Method::GET, Jwks)],
        "/v1/auth/signup" => &[(&Method::POST, Signup)],
        "/v1/auth/login" => &[(&Method::POST, Login)],
        "/v1/auth/refresh" => &[(&Method::POST, Refresh)],
        "/v1/auth/logout" => &[(&Method::POST, Logout)],
        "/v1/auth/user" => &[
            (&Method::GET, GetUser),
            (&Method::PATCH, UpdateUser),
            (&Method::DELETE, DeleteUser),
        ],
        _ => return Match::NotFound,
    };
    for (m, r) in table {
        if *m == method {
            return Match::Found(*r);
        }
    }
    let allow = match path {
        "/v1/auth/user" => "GET, PATCH, DELETE",
        "/healthz" | "/.well-known/jwks.json" => "GET",
        _ => "POST",
    };
    Match::WrongMethod(allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(&Method::POST, "/v1/auth/signup"), Match::Found(Route::Signup));
        assert_eq!(route(&Method::DELETE, "/v1/auth/user"), Match::Found(Route::DeleteUser));
        assert_eq!(route(&Method::GET, "/v1/auth/signup"), Match::WrongMethod("POST"));
        assert_eq!(route(&Method::PUT, "/v1/auth/user"), Match::WrongMethod("GET, PATCH, DELETE"));
        assert_eq!(route(&Method::GET, "/v1/auth/signup/"), Match::NotFound);
        assert_eq!(route(&Method::GET, "/v1/../healthz"), Match::NotFound);
        assert_eq!(route(&Method::GET, ""), Match::NotFound);
    }
}
