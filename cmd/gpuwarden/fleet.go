package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/common/config"
	"github.com/spf13/cobra"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/fleet"
)

func newFleetCmd() *cobra.Command {
	var (
		server, user, passwordFile, bearerFile, caFile, httpConfig, output, job string
		insecure                                                                bool
		timeout, window, staleAfter                                             time.Duration
		idleBelow                                                               float64
		top                                                                     int
	)
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "Report on many nodes from Prometheus: unhealthy GPUs, Xids, idle GPUs, driver and reboot state, agents down",
		Long: `fleet asks Prometheus (or anything with its query API: a federating
Prometheus, Thanos, Mimir, VictoriaMetrics) about every node whose agent it
scrapes, over --window. Each section stands on its own: a query that fails
says so there. Exit codes as check: 0 ok, 1 warning, 2 critical, 3 when
Prometheus could not be asked. docs/fleet.md explains every query.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return unknown(fmt.Errorf("--output %q: want table or json", output))
			}
			if server == "" {
				return unknown(errors.New("--prometheus is required (the URL of the Prometheus to ask)"))
			}
			var hc config.HTTPClientConfig
			if httpConfig != "" {
				if user != "" || passwordFile != "" || bearerFile != "" || caFile != "" || insecure {
					return unknown(errors.New("--http.config.file and the --prometheus.* authentication flags exclude each other"))
				}
				c, _, err := config.LoadHTTPConfigFile(httpConfig)
				if err != nil {
					return unknown(fmt.Errorf("--http.config.file: %w", err))
				}
				hc = *c
			} else {
				hc = config.DefaultHTTPClientConfig
				if user != "" {
					hc.BasicAuth = &config.BasicAuth{Username: user, PasswordFile: passwordFile}
				} else if passwordFile != "" {
					return unknown(errors.New("--prometheus.basic-auth-password-file needs --prometheus.basic-auth-user"))
				}
				if bearerFile != "" {
					hc.Authorization = &config.Authorization{Type: "Bearer", CredentialsFile: bearerFile}
				}
				hc.TLSConfig = config.TLSConfig{CAFile: caFile, InsecureSkipVerify: insecure}
			}
			if err := hc.Validate(); err != nil {
				return unknown(err)
			}
			httpClient, err := config.NewClientFromConfig(hc, "gpuwarden-fleet")
			if err != nil {
				return unknown(err)
			}
			client, err := fleet.NewClient(server, httpClient, timeout)
			if err != nil {
				return unknown(err)
			}
			rep := fleet.Build(cmd.Context(), client, fleet.Options{
				Window: window, Job: job, StaleAfter: staleAfter, IdleBelow: idleBelow, Top: top,
			}, client.Base.Redacted())
			out := cmd.OutOrStdout()
			if output == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else if err := rep.WriteTable(out); err != nil {
				return err
			}
			if rep.Level != event.OK {
				return &exitError{code: rep.Level.ExitCode()}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "prometheus", "", "URL of the Prometheus (or compatible query API) to ask, e.g. http://prometheus:9090")
	f.StringVar(&user, "prometheus.basic-auth-user", "", "basic auth user name")
	f.StringVar(&passwordFile, "prometheus.basic-auth-password-file", "", "file holding the basic auth password")
	f.StringVar(&bearerFile, "prometheus.bearer-token-file", "", "file holding a bearer token")
	f.StringVar(&caFile, "prometheus.ca-file", "", "CA certificate to verify the server with")
	f.BoolVar(&insecure, "prometheus.insecure-skip-verify", false, "do not verify the server's certificate")
	f.StringVar(&httpConfig, "http.config.file", "", "HTTP client configuration file, as promtool's (instead of the --prometheus.* flags)")
	f.DurationVar(&timeout, "prometheus.timeout", 30*time.Second, "timeout of each query")
	f.DurationVar(&window, "window", 24*time.Hour, "how far back counts, averages and 'last seen' reach")
	f.StringVar(&job, "job", "gpuwarden", "scrape job of the agents, for up{job=...}")
	f.DurationVar(&staleAfter, "stale-after", 3*time.Minute, "an agent with no sample for this long is stale (about 3 scrape intervals)")
	f.Float64Var(&idleBelow, "idle-below", 0.05, "SM activity (0..1) under which a GPU counts as idle; GPU_UTIL is compared with 100 times it")
	f.IntVar(&top, "top", 10, "rows shown in the Xid and idle sections")
	f.StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}
