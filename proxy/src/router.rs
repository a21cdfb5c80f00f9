//! Method + path -> route. Paths are matched segment by segment, exactly as sent (no
//! decoding, no dot-segment resolution); path parameters are handed to SQL as bind
//! parameters only. Unknown paths are 404, known paths with another method 405.

use http::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Health,
    Jwks,
    Signup,
    Login,
    Refresh,
    Logout,
    GetUser,
    UpdateUser,
    DeleteUser,
    ListCollections,
    CreateCollection,
    GetCollection(&'a str),
    DropCollection(&'a str),
    ListDocuments(&'a str),
    CreateDocument(&'a str),
    GetDocument(&'a str, &'a str),
    ReplaceDocument(&'a str, &'a str),
    PatchDocument(&'a str, &'a str),
    DeleteDocument(&'a str, &'a str),
    GetAcl(&'a str, &'a str),
    SetAcl(&'a str, &'a str),
    SetOwner(&'a str, &'a str),
    ListIndexes(&'a str),
    CreateIndex(&'a str),
    DropIndex(&'a str, &'a str),
    ListRoles,
    CreateRole,
    DropRole(&'a str),
    AddRoleMember(&'a str, &'a str),
    RemoveRoleMember(&'a str, &'a str),
    AddRoleToRole(&'a str, &'a str),
    RemoveRoleFromRole(&'a str, &'a str),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Match<'a> {
    Found(Route<'a>),
    /// The path exists; these methods are allowed on it.
    WrongMethod(&'static str),
    NotFound,
}

impl Route<'_> {
    /// Routes whose handler reads a JSON body.
    pub fn has_body(&self) -> bool {
        use Route::*;
        matches!(
            self,
            Signup | Login | Refresh | UpdateUser | CreateCollection | CreateDocument(_) | CreateIndex(_)
                | ReplaceDocument(..) | PatchDocument(..) | SetAcl(..) | SetOwner(..) | CreateRole
        )
    }
}

pub fn route<'a>(method: &Method, path: &'a str) -> Match<'a> {
    use Route::*;
    let Some(rest) = path.strip_prefix('/') else {
        return Match::NotFound;
    };
    let segs: Vec<&'a str> = rest.split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Match::NotFound;
    }
    let m = method.clone();
    macro_rules! pick {
        ($allow:expr; $($meth:ident => $r:expr),+ $(,)?) => {{
            $( if m == Method::$meth { return Match::Found($r); } )+
            return Match::WrongMethod($allow);
        }};
    }
    match segs.as_slice() {
        ["healthz"] => pick!("GET"; GET => Health),
        [".well-known", "jwks.json"] => pick!("GET"; GET => Jwks),
        ["v1", "auth", "signup"] => pick!("POST"; POST => Signup),
        ["v1", "auth", "login"] => pick!("POST"; POST => Login),
        ["v1", "auth", "refresh"] => pick!("POST"; POST => Refresh),
        ["v1", "auth", "logout"] => pick!("POST"; POST => Logout),
        ["v1", "auth", "user"] => pick!("GET, PATCH, DELETE"; GET => GetUser, PATCH => UpdateUser, DELETE => DeleteUser),
        ["v1", "collections"] => pick!("GET, POST"; GET => ListCollections, POST => CreateCollection),
        ["v1", "collections", c] => pick!("GET, DELETE"; GET => GetCollection(c), DELETE => DropCollection(c)),
        ["v1", "collections", c, "documents"] => pick!("GET, POST"; GET => ListDocuments(c), POST => CreateDocument(c)),
        ["v1", "collections", c, "documents", id] => pick!("GET, PUT, PATCH, DELETE";
            GET => GetDocument(c, id), PUT => ReplaceDocument(c, id), PATCH => PatchDocument(c, id), DELETE => DeleteDocument(c, id)),
        ["v1", "collections", c, "documents", id, "acl"] => pick!("GET, PUT"; GET => GetAcl(c, id), PUT => SetAcl(c, id)),
        ["v1", "collections", c, "documents", id, "owner"] => pick!("PUT"; PUT => SetOwner(c, id)),
        ["v1", "collections", c, "indexes"] => pick!("GET, POST"; GET => ListIndexes(c), POST => CreateIndex(c)),
        ["v1", "collections", c, "indexes", path] => pick!("DELETE"; DELETE => DropIndex(c, path)),
        ["v1", "roles"] => pick!("GET, POST"; GET => ListRoles, POST => CreateRole),
        ["v1", "roles", r] => pick!("DELETE"; DELETE => DropRole(r)),
        ["v1", "roles", r, "members", u] => pick!("PUT, DELETE"; PUT => AddRoleMember(r, u), DELETE => RemoveRoleMember(r, u)),
        ["v1", "roles", r, "roles", m2] => pick!("PUT, DELETE"; PUT => AddRoleToRole(r, m2), DELETE => RemoveRoleFromRole(r, m2)),
        _ => Match::NotFound,
    }
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
        assert_eq!(route(&Method::GET, "//healthz"), Match::NotFound);
    }

    #[test]
    fn document_routes_carry_their_parameters() {
        assert_eq!(
            route(&Method::PATCH, "/v1/collections/todos/documents/abc"),
            Match::Found(Route::PatchDocument("todos", "abc"))
        );
        assert_eq!(route(&Method::PUT, "/v1/collections/t/documents/x/acl"), Match::Found(Route::SetAcl("t", "x")));
        assert_eq!(route(&Method::POST, "/v1/collections/t/documents/x"), Match::WrongMethod("GET, PUT, PATCH, DELETE"));
        assert_eq!(route(&Method::GET, "/v1/collections/t/documents/"), Match::NotFound);
        assert_eq!(route(&Method::PUT, "/v1/roles/r/members/u"), Match::Found(Route::AddRoleMember("r", "u")));
        assert!(Route::CreateDocument("t").has_body());
        assert!(!Route::GetDocument("t", "x").has_body());
    }
}
