package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/mcp"
	fhttp "github.com/fangd/fangd/transport/http"
	"github.com/fangd/fangd/transport/ssrf"
)

// SIGHUP re-reads config.toml. The new file is loaded and validated as a
// whole (channel tables included) before anything changes; a file with a
// bad key changes nothing. Then every reloadable setting that changed is
// handed to the subsystem that owns it, through that subsystem's own
// setter or reconcile API. Settings that only take effect at start keep
// their running value and are named in one warning.

// reloadable are the config keys (dotted, as in the file) that SIGHUP
// applies to the running daemon. Every other key needs a restart.
var reloadable = []string{
	"log.level", "log.format",
	"rate_limit.",
	"approval.",
	"network_policy.",
	"webhook_triggers.",
	"channels",
	"mcp_servers",
}

func isReloadable(key string) bool {
	for _, r := range reloadable {
		if key == r || (strings.HasSuffix(r, ".") && strings.HasPrefix(key, r)) {
			return true
		}
	}
	return false
}

// reloadParts are the subsystems a reload reaches, set as the daemon starts.
type reloadParts struct {
	// load reads and validates the config file as `fangd serve` did
	// (flags and environment applied again).
	load      func() (Config, error)
	cfg       Config // the config in force
	console   *consoleSink
	approvals *approval.Approvals
	guard     *ssrf.Guard
}

// configDiff lists the dotted keys whose values differ between a and b,
// walking the TOML tables; arrays and maps (channels, mcp_servers) count as
// one key each.
func configDiff(a, b Config) []string {
	var out []string
	diffStruct(reflect.ValueOf(a), reflect.ValueOf(b), "", &out)
	sort.Strings(out)
	return out
}

func diffStruct(a, b reflect.Value, prefix string, out *[]string) {
	t := a.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		av, bv := a.Field(i), b.Field(i)
		if f.Type.Kind() == reflect.Struct {
			diffStruct(av, bv, prefix+name+".", out)
			continue
		}
		if !reflect.DeepEqual(av.Interface(), bv.Interface()) {
			*out = append(*out, prefix+name)
		}
	}
}

// reloadReport is what one reload did, for the log and the audit entry:
// key and entity names only, never a value.
type reloadReport struct {
	applied, restartOnly []string
	channels             []string // "started:x", "stopped:y", "restarted:z"
	mcp                  []string // "added:x", "removed:y", "reconnected:z"
	problems             []string
}

func (r *reloadReport) details() string {
	parts := []string{"changed=" + joinOrNone(r.applied)}
	if len(r.channels) > 0 {
		parts = append(parts, "channels="+strings.Join(r.channels, ","))
	}
	if len(r.mcp) > 0 {
		parts = append(parts, "mcp_servers="+strings.Join(r.mcp, ","))
	}
	if len(r.restartOnly) > 0 {
		parts = append(parts, "needs_restart="+strings.Join(r.restartOnly, ","))
	}
	if len(r.problems) > 0 {
		parts = append(parts, "problems="+strings.Join(r.problems, "; "))
	}
	return strings.Join(parts, " ")
}

func joinOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

// reload handles one SIGHUP. It never stops the daemon: a bad file is
// refused whole and the running config stays.
func (d *daemon) reload() {
	rp := d.reloads
	next, err := rp.load()
	if err == nil {
		err = d.checkEntities(next)
	}
	if err != nil {
		problems := strings.Split(err.Error(), "\n")
		// Audited before it is logged: the log line ends the reload for
		// whoever watches it.
		d.recordOutcome("config_reloaded", "error", "refused: "+strings.Join(problems, "; "))
		d.log.Error().Strs("problems", problems).Str("config", rp.cfg.path).
			Msg("config reload refused: the file has errors; the running config is unchanged")
		return
	}
	rep := &reloadReport{}
	for _, k := range configDiff(rp.cfg, next) {
		if isReloadable(k) {
			rep.applied = append(rep.applied, k)
		} else {
			rep.restartOnly = append(rep.restartOnly, k)
		}
	}
	if len(rep.restartOnly) > 0 {
		d.log.Warn().Strs("keys", rep.restartOnly).
			Msg("config reload: these keys take effect only at start; restart fangd to apply them (the running values are kept)")
	}
	merged := d.apply(rp.cfg, next, rep)
	rp.cfg = merged
	outcome := "ok"
	ev := d.log.Info()
	if len(rep.problems) > 0 {
		outcome, ev = "partial", d.log.Warn().Strs("problems", rep.problems)
	}
	d.recordOutcome("config_reloaded", outcome, rep.details())
	ev.Strs("changed", rep.applied).Strs("channels", rep.channels).Strs("mcp_servers", rep.mcp).
		Strs("needs_restart", rep.restartOnly).Msg("config reloaded")
}

// checkEntities checks what validate cannot see alone: channel tables
// (adapter fields, secret variables, agent names) and MCP servers whose
// names were taken through the API.
func (d *daemon) checkEntities(next Config) error {
	var errs []error
	if !reflect.DeepEqual(next.Channels, d.reloads.cfg.Channels) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for _, p := range d.channels.Check(ctx, next.Channels) {
			errs = append(errs, errors.New(p))
		}
		cancel()
	}
	specs, _ := next.mcpSpecs() // validated already
	if len(specs) > 0 && !reflect.DeepEqual(next.MCPServers, d.reloads.cfg.MCPServers) {
		views, err := d.mcp.Servers(context.Background())
		if err != nil {
			return err
		}
		api := map[string]bool{}
		for _, v := range views {
			if v.Source != "config" {
				api[v.Name] = true
			}
		}
		for _, sp := range specs {
			if api[sp.Name] {
				errs = append(errs, fmt.Errorf("mcp_servers: %s was added through the API; delete it there or rename this entry", sp.Name))
			}
		}
	}
	return errors.Join(errs...)
}

// apply hands each changed reloadable setting to its owner and returns the
// config now in force: next's reloadable keys over cur's restart-only ones.
func (d *daemon) apply(cur, next Config, rep *reloadReport) Config {
	merged := cur
	changed := func(prefix string) bool {
		for _, k := range rep.applied {
			if k == prefix || strings.HasPrefix(k, prefix+".") {
				return true
			}
		}
		return false
	}
	fail := func(what string, err error) {
		rep.problems = append(rep.problems, what+": "+err.Error())
	}
	if changed("log.level") {
		level, _ := zerolog.ParseLevel(next.Log.Level)
		zerolog.SetGlobalLevel(level)
		merged.Log.Level = next.Log.Level
	}
	if changed("log.format") {
		d.reloads.console.setFormat(next.Log.Format)
		merged.Log.Format = next.Log.Format
	}
	// The network policy first: servers and channels started below dial
	// through it.
	if changed("network_policy") {
		if err := d.reloads.guard.SetAllowHosts(next.NetworkPolicy.AllowHosts); err != nil {
			fail("network_policy", err)
		} else {
			merged.NetworkPolicy = next.NetworkPolicy
		}
	}
	if changed("rate_limit") {
		d.http.SetRateLimits(fhttp.RateLimits{PerMinute: next.RateLimit.APIRequestsPerMinute, ExemptLoopback: next.RateLimit.ExemptLoopback})
		merged.RateLimit = next.RateLimit
	}
	if changed("approval") {
		if err := d.reloads.approvals.SetPolicy(next.Approval); err != nil {
			fail("approval", err)
		} else {
			merged.Approval = next.Approval
		}
	}
	if changed("webhook_triggers") {
		cs, err := next.commsSettings()
		if err != nil {
			fail("webhook_triggers", err)
		} else {
			d.http.SetHooks(fhttp.HooksConfig{Token: cs.hookToken, Secret: cs.hookSecret, MaxPayload: next.WebhookTriggers.MaxPayloadBytes})
			merged.WebhookTriggers = next.WebhookTriggers
		}
	}
	if changed("channels") {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := d.channels.Apply(ctx, next.Channels)
		cancel()
		if err != nil {
			fail("channels", err)
		} else {
			merged.Channels = next.Channels
			rep.channels = append(rep.channels, prefixed("started:", res.Started)...)
			rep.channels = append(rep.channels, prefixed("stopped:", res.Stopped)...)
			rep.channels = append(rep.channels, prefixed("restarted:", res.Restarted)...)
			rep.problems = append(rep.problems, res.Errors...)
		}
	}
	if changed("mcp_servers") {
		specs, _ := next.mcpSpecs()
		if specs == nil {
			specs = []mcp.Spec{}
		}
		res, err := d.mcp.ReloadServers(context.Background(), specs)
		if err != nil {
			fail("mcp_servers", err)
		} else {
			merged.MCPServers = next.MCPServers
			rep.mcp = append(rep.mcp, prefixed("added:", res.Added)...)
			rep.mcp = append(rep.mcp, prefixed("removed:", res.Removed)...)
			rep.mcp = append(rep.mcp, prefixed("reconnected:", res.Reconnected)...)
		}
	}
	return merged
}

func prefixed(p string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = p + n
	}
	return out
}

func (d *daemon) recordOutcome(eventType, outcome, details string) {
	ctx, cancel := context.WithTimeout(context.Background(), audit.AppendTimeout)
	defer cancel()
	if _, err := d.audit.Append(ctx, audit.Event{EventType: eventType, Details: details, Outcome: outcome, Actor: "daemon"}); err != nil {
		d.log.Error().Err(err).Str("event", eventType).Msg("could not audit")
	}
}

// consoleSink is the console side of the daemon's log. Every logger in the
// daemon is derived from one root logger, so the format (json or pretty)
// changes on reload by swapping the writer under it.
type consoleSink struct {
	out io.Writer
	w   atomic.Pointer[io.Writer]
}

func newConsoleSink(out io.Writer, format string) *consoleSink {
	c := &consoleSink{out: out}
	c.setFormat(format)
	return c
}

func (c *consoleSink) setFormat(format string) {
	var w io.Writer = c.out
	if format == "pretty" {
		w = zerolog.ConsoleWriter{Out: c.out, TimeFormat: time.RFC3339}
	}
	c.w.Store(&w)
}

func (c *consoleSink) Write(p []byte) (int, error) { return (*c.w.Load()).Write(p) }
