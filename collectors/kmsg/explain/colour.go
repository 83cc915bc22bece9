package explain

import "github.com/gpuwarden/gpuwarden/collectors/event"

// Colours paints health levels for a terminal. The zero value paints
// nothing. Paint only text that is already printable (see Printable): the
// escape sequences added here are the only ones that reach the terminal.
type Colours bool

// ANSI SGR sequences, one colour per level; every one is five bytes long so
// that columns painted alike stay aligned.
const (
	sgrReset    = "\x1b[0m"
	sgrRed      = "\x1b[31m"
	sgrYellow   = "\x1b[33m"
	sgrGreen    = "\x1b[32m"
	sgrMagenta  = "\x1b[35m"
	sgrDarkGrey = "\x1b[90m"
)

// Level paints text in the colour of l: critical red, warning yellow,
// unknown magenta, ok green.
func (c Colours) Level(l event.Level, text string) string {
	if !c {
		return text
	}
	sgr := sgrGreen
	switch l {
	case event.Critical:
		sgr = sgrRed
	case event.Warning:
		sgr = sgrYellow
	case event.Unknown:
		sgr = sgrMagenta
	}
	return sgr + text + sgrReset
}

// Skipped paints the word for a check that did not run.
func (c Colours) Skipped(text string) string {
	if !c {
		return text
	}
	return sgrDarkGrey + text + sgrReset
}
