package fleet

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/gpuwarden/gpuwarden/collectors/kmsg/explain"
)

// WriteTable writes the report for a person: a summary line, then each
// section with its rows. Every string that came from Prometheus (label
// values, error text) is escaped for the terminal.
func (rep *Report) WriteTable(w io.Writer) error {
	p := explain.Printable
	fmt.Fprintf(w, "FLEET %s - %s, window %s, at %s\n", strings.ToUpper(rep.Level.String()), p(rep.Prometheus), rep.Window, rep.Time.Format("2006-01-02 15:04:05Z"))
	if rep.Error != "" {
		fmt.Fprintf(w, "could not ask Prometheus: %s\n", p(rep.Error))
		return nil
	}
	for _, s := range rep.Sections {
		fmt.Fprintf(w, "\n== %s [%s]\n", s.Title, s.Level)
		if s.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", p(s.Error))
			continue
		}
		for _, n := range s.NoData {
			fmt.Fprintf(w, "  %s\n", p(n))
		}
		for _, n := range s.Notes {
			fmt.Fprintf(w, "  %s\n", p(n))
		}
		if len(s.Rows) == 0 {
			if len(s.NoData) == 0 {
				fmt.Fprintln(w, "  none")
			}
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  %s\n", strings.ToUpper(strings.Join(s.Columns, "\t")))
		for _, row := range s.Rows {
			cells := make([]string, len(s.Columns))
			for i, c := range s.Columns {
				cells[i] = p(row[c])
			}
			fmt.Fprintf(tw, "  %s\n", strings.Join(cells, "\t"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}
