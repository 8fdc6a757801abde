// Package rules is Bastion's rule model: what a rule is (Rule), when it is
// valid (Rule.Validate), which rule decides a connection (Matcher, Compare),
// the rule a prompt answer makes (ForPrompt), and rules' wire and file forms
// (ToProto/FromProto, Export/Import, ImportOpenSnitch).
//
// # Trust boundary
//
// Everything this package parses is untrusted: rule files given to Import
// and ImportOpenSnitch, wire rules given to FromProto, and every operand of
// a rule, which its user controls (a glob, a regular expression). Parsers
// never panic, bound their input, and return errors that name the field or
// position. Operands are compiled once, in NewMatcher; globs match in time
// linear in pattern × path, and regular expressions are RE2 (linear time).
// What a rule costs once compiled is bounded (cost.go: program size, the
// work per byte of command line, memory per user's set), so that the agent,
// which holds every user's rules, cannot be exhausted through them.
//
// # Matching
//
// A rule matches a connection when every operand it sets matches; an unset
// operand matches anything. Exe is an exact path or a glob (path.Match
// syntax within each `/`-separated element; `**` as a whole element spans
// elements, zero or more of them, one or more when it is last, as in
// gitignore; a backslash escapes). A glob never matches a path that contains
// a newline. Cmdline must match the whole command line (arguments joined by
// single spaces). Host compares ignoring case and a trailing dot;
// `*.example.com` matches example.com and every name under it. Host rules
// match only connections whose name is known.
//
// # Precedence
//
// Where several rules match, the most specific wins. Rules are compared
// operand by operand, in this order of importance, until one differs:
//
//  1. Executable: an exact path beats a glob, a glob with a longer literal
//     prefix (text before its first wildcard) beats a shorter one, and any
//     glob beats no Exe. Then a rule with ExeSHA256 beats one without.
//  2. Command line: a rule with Cmdline beats one without. (It ranks next
//     to the executable because, for interpreters, the command line is what
//     says which program runs: "python3 backup.py" is a different program
//     from python3 in general.)
//  3. Destination: a host name beats a single address, which beats a
//     prefix, narrower prefixes (fewer host bits) first, which beat a
//     domain wildcard, more labels first, which beats any destination. A
//     rule that sets both Host and Dst ranks by the more specific of the
//     two, then by the other.
//  4. Port: one port beats a range, narrower ranges first, which beat any
//     port.
//  5. Protocol: set beats any.
//  6. Action, on a tie in all of the above: deny beats reject beats allow,
//     so that an ambiguous rule set fails closed.
//  7. Then the older rule (Created) wins, then the lower ID, then the
//     earlier position in the list given to NewMatcher.
//
// This is a total order (see Compare), so the decision never depends on
// map iteration or on the order rules were stored in. The ordering is
// lexicographic: a rule for /usr/bin/curl and any destination beats a rule
// for any program and 192.0.2.1; a user who wants 192.0.2.1 blocked for
// curl too writes that rule for curl.
//
// # Expiry
//
// A Duration rule matches while the time given to Match is before its
// Expires. Expires is a wall-clock time; Now and BootClock give times whose
// comparisons keep counting while the machine is suspended.
//
// # OpenSnitch
//
// ImportOpenSnitch never imports a rule broader than the original: an
// operand that Bastion cannot express (user.id, process.id, environment,
// parent, hash, source, interface, lists read from files, regular
// expressions without a glob equivalent, case-sensitive host names) makes
// the whole rule skipped, since dropping it would widen the rule; a
// problem line says which rule and which field. Where Bastion's form is a
// strict subset of the original (an unanchored path expression imported as
// an exact path, say), the rule is imported and a problem line starting
// "imported narrower" says so. OpenSnitch's case-insensitive comparison of
// process paths is imported as an exact comparison (a subset). "tcp" and
// "udp" mean IPv4 in OpenSnitch ("tcp6", "udp6" IPv6), so a protocol
// operand also restricts Dst to 0.0.0.0/0 or ::/0. OpenSnitch's
// "precedence" flag has no equivalent; such rules are imported with a
// problem line, and rank by specificity.
package rules
