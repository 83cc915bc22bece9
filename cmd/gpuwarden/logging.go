package main

import (
	"io"
	"log/slog"
	"os"
)

func newLogger(w io.Writer, level, format string) *slog.Logger {
	return newLevelLogger(w, logLevel(level), format)
}

// newLevelLogger logs at level, which a slog.LevelVar lets a reload change.
func newLevelLogger(w io.Writer, level slog.Leveler, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// logLevel is the slog level of a log.level value (validated by Load).
func logLevel(level string) slog.Level {
	switch level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

func stderrLogger() *slog.Logger { return newLogger(os.Stderr, "info", "logfmt") }
