//! `allowed_hosts` patterns and the URLs `http.fetch` is handed: whatever
//! the bytes, parsing ends without a panic, a parsed URL prints back to one
//! that parses the same, and a pattern allows a URL only if that URL's own
//! line (`Target::pattern`) would allow it too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshplay::catalogue::allowed_host::{AllowedHost, Target};

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    pattern: String,
    url: String,
}

fuzz_target!(|input: Input| {
    let pattern = input.pattern.parse::<AllowedHost>();
    let Ok(target) = Target::parse(&input.url) else {
        return;
    };
    let again = Target::parse(&target.url()).expect("a canonical URL parses");
    assert_eq!(again, target);
    let own: AllowedHost = target
        .pattern()
        .parse()
        .expect("a target's own line parses");
    assert!(own.allows(&target), "{own:?} {target:?}");
    if let Ok(p) = pattern
        && p.allows(&target)
    {
        assert_eq!(p.as_str().parse::<AllowedHost>().as_ref(), Ok(&p));
    }
});
