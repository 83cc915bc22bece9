package dkms

import "strings"

// compareKernels orders kernel releases the way rpm and dpkg both agree on
// for real release strings ("6.1.0-18-amd64" < "6.1.0-20-amd64",
// "5.14.0-427.13.1.el9_4.x86_64" < "5.14.0-503.29.1.el9_5.x86_64"): runs of
// digits compare as numbers, runs of letters as text, other characters only
// separate. It returns -1, 0 or 1.
func compareKernels(a, b string) int {
	for {
		a = strings.TrimLeftFunc(a, isSep)
		b = strings.TrimLeftFunc(b, isSep)
		if a == "" || b == "" {
			switch {
			case a == b:
				return 0
			case a == "":
				return -1
			default:
				return 1
			}
		}
		digits := isDigit(rune(a[0]))
		if digits != isDigit(rune(b[0])) {
			// rpm: a numeric segment is newer than an alphabetic one.
			if digits {
				return 1
			}
			return -1
		}
		var sa, sb string
		sa, a = cutRun(a, digits)
		sb, b = cutRun(b, digits)
		if digits {
			sa = strings.TrimLeft(sa, "0")
			sb = strings.TrimLeft(sb, "0")
			if len(sa) != len(sb) {
				if len(sa) < len(sb) {
					return -1
				}
				return 1
			}
		}
		if c := strings.Compare(sa, sb); c != 0 {
			return c
		}
	}
}

func isDigit(r rune) bool { return r >= '0' && r <= '9' }

func isAlpha(r rune) bool { return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') }

func isSep(r rune) bool { return !isDigit(r) && !isAlpha(r) }

func cutRun(s string, digits bool) (run, rest string) {
	i := 0
	for i < len(s) {
		r := rune(s[i])
		if digits && !isDigit(r) || !digits && !isAlpha(r) {
			break
		}
		i++
	}
	return s[:i], s[i:]
}
