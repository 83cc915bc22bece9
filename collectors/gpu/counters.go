package gpu

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// Counters is a field selection read from dcgm-exporter's counters file
// (default-counters.csv, or a site's own -f file), so a site moving from
// dcgm-exporter keeps the same port, names and file: Only[i] says whether
// Fields[i] is exported.
type Counters struct {
	Only []bool
	// Warnings name, with file and line, each row that is kept out: a
	// field gpuwarden does not sample, a name that is no DCGM field, a
	// type that differs from dcgm-exporter's own.
	Warnings []string
}

// ParseCounters reads a counters file: one "NAME, TYPE, HELP" row a line,
// "#" comments and blank lines ignored, TYPE gauge, counter or label (the
// driver version and the like, which gpuwarden always puts in labels). A
// row that is not of that shape is an error naming the file and the line;
// rows gpuwarden cannot honour are warnings.
func ParseCounters(text []byte, file string) (*Counters, error) {
	c := &Counters{Only: make([]bool, len(Fields))}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	var errs []string
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.SplitN(line, ",", 3)
		if len(parts) < 2 {
			errs = append(errs, fmt.Sprintf("%s:%d: want \"NAME, TYPE, HELP\", got %q", file, n, truncateText(line, 80)))
			continue
		}
		name, typ := strings.TrimSpace(parts[0]), strings.TrimSpace(parts[1])
		switch typ {
		case "gauge", "counter", "label":
		default:
			errs = append(errs, fmt.Sprintf("%s:%d: %s: type %q, want gauge, counter or label", file, n, name, truncateText(typ, 40)))
			continue
		}
		if typ == "label" || name == "DCGM_FI_DEV_XID_ERRORS" {
			continue // always there: the driver version is a label on every series; the last Xid is always exported
		}
		i := FieldIndex(name)
		if i < 0 {
			what := "is not a field gpuwarden samples"
			if !strings.HasPrefix(name, "DCGM_FI_") && !strings.HasPrefix(name, "DCGM_EXP_") {
				what = "is not a DCGM field name"
			}
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s:%d: %s %s; left out", file, n, truncateText(name, 80), what))
			continue
		}
		want := "gauge"
		if Fields[i].Type == Counter {
			want = "counter"
		}
		if typ != want {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s:%d: %s is a %s in dcgm-exporter and here, not a %s; exported as a %s", file, n, name, want, typ, want))
		}
		c.Only[i] = true
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Sprintf("%s: %v", file, err))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return c, nil
}

func truncateText(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
