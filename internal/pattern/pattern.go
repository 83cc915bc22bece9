// Package pattern is a regular expression with a length bound: the strict
// patterns that check names, IDs and paths, written with an unbounded
// repetition and a bound on the string's length instead of a counted
// repetition. Go's regexp compiles x{0,252} into 252 copies of x: tens of
// kilobytes of heap for one pattern, kept for the life of the process.
package pattern

import "regexp"

// Bounded matches strings of min to max bytes that its expression matches.
type Bounded struct {
	re       *regexp.Regexp
	min, max int
}

// MustCompile is regexp.MustCompile's Bounded. With expr anchored and made
// of ASCII only, a string it matches is ASCII, so its length in bytes is its
// length in characters: ^[a-z][a-z0-9]*$ of 1 to 64 bytes is exactly
// ^[a-z][a-z0-9]{0,63}$.
func MustCompile(expr string, min, max int) Bounded {
	return Bounded{re: regexp.MustCompile(expr), min: min, max: max}
}

// MatchString says whether s is min to max bytes long and matches.
func (b Bounded) MatchString(s string) bool {
	return len(s) >= b.min && len(s) <= b.max && b.re.MatchString(s)
}
