package channel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// Options wire the channels subsystem.
type Options struct {
	Kernel   *kernel.Kernel
	DB       *store.DB
	Vault    *store.Vault
	Builders Builders
	// Agents answers inbound messages; nil leaves them published but
	// unanswered (and agent names unchecked at configure time).
	Agents Agents
	// Bus receives channel events; nil publishes nothing.
	Bus Bus
	// Commands answers chat commands (/approve, /reject) before they
	// reach the agent; nil sends everything to the agent.
	Commands Commands
	// LoadConfig re-reads the [channels.<name>] tables of config.toml for
	// POST /api/channels/reload; nil means there is no config file.
	LoadConfig func() (map[string]map[string]any, error)
	// Backoff paces reconnects; zero means kernel.DefaultBackoff.
	Backoff kernel.Backoff
	// Env looks up environment variables for secrets a config.toml table
	// names with <key>_env (or leaves to the field's default variable);
	// nil means os.Getenv.
	Env func(string) string
	// Network is the outbound policy ([network_policy] allow_hosts) URL
	// fields are checked against and adapters dial through; nil checks
	// nothing (tests).
	Network Network
	// MaxChannels caps the configured channels, from the API and
	// config.toml together (default DefaultMaxChannels): each runs an
	// actor, its goroutines and a poller or socket. A new channel beyond
	// it is 409 too_many_channels; reconfiguring an existing one is not
	// refused.
	MaxChannels int
	// Clustered keeps channel records, secrets (sealed with the vault
	// key) and queues in etcd, and runs a channel only on the node that
	// holds it (cluster mode, docs/cluster.md): the supervisor starts
	// empty and waits for UseCluster and ApplyCluster.
	Clustered bool
	// Clock paces reconnects and the outbox's retries and rate-limit
	// pauses; nil means the wall clock (tests inject a fake one).
	Clock kernel.Clock
}

// DefaultMaxChannels is Options.MaxChannels' default ([channel_limits]
// max_channels).
const DefaultMaxChannels = 1000

// runtime is what the supervisor, every channel actor and the Service share:
// immutable wiring and goroutine-safe stores.
type runtime struct {
	k        *kernel.Kernel
	db       *store.DB
	vault    *store.Vault
	builders Builders
	agents   Agents
	bus      Bus
	commands Commands
	net      Network
	max      int
	log      zerolog.Logger
	backoff  kernel.Backoff
	clock    kernel.Clock
	records  *store.Collection[record]
	cursors  *store.Collection[string]
	queues   queueStore
	badgerQ  *queues
	// clu is the cluster side (cluster.go); nil on a single node.
	clu     *clusterState
	metrics *metrics
}

type metrics struct {
	in, out, failed, filtered, reconnects *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	vec := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"adapter"})
	}
	m := &metrics{
		in:         vec("fangd_channel_messages_in_total", "Inbound chat messages accepted."),
		out:        vec("fangd_channel_messages_out_total", "Messages delivered to chat platforms."),
		failed:     vec("fangd_channel_messages_failed_total", "Outbound messages the platform rejected."),
		filtered:   vec("fangd_channel_messages_filtered_total", "Inbound messages dropped by allow-lists."),
		reconnects: vec("fangd_channel_reconnects_total", "Adapter reconnects after a failure."),
	}
	for _, c := range []prometheus.Collector{m.in, m.out, m.failed, m.filtered, m.reconnects} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Service is the channels subsystem's handle for the HTTP layer and the
// comms router.
type Service struct {
	rt         *runtime
	pid        *actor.PID
	loadConfig func() (map[string]map[string]any, error)
	env        func(string) string
}

// Start spawns the "channels" supervisor, which starts every channel
// stored from an earlier run.
func Start(opts Options) (*Service, error) {
	if opts.Backoff == (kernel.Backoff{}) {
		opts.Backoff = kernel.DefaultBackoff
	}
	if opts.MaxChannels <= 0 {
		opts.MaxChannels = DefaultMaxChannels
	}
	if opts.Env == nil {
		opts.Env = osGetenv
	}
	if opts.Clock == nil {
		opts.Clock = kernel.RealClock{}
	}
	m, err := newMetrics(opts.Kernel.Metrics)
	if err != nil {
		return nil, err
	}
	q := newQueues(opts.DB)
	rt := &runtime{k: opts.Kernel, db: opts.DB, vault: opts.Vault, builders: opts.Builders,
		agents: opts.Agents, bus: opts.Bus, commands: opts.Commands, net: opts.Network, max: opts.MaxChannels, backoff: opts.Backoff, metrics: m,
		clock:   opts.Clock,
		log:     opts.Kernel.Log.With().Str("component", "channels").Logger(),
		records: store.NewCollection[record](opts.DB, "channels"),
		cursors: q.cursors, queues: q, badgerQ: q}
	if opts.Clustered {
		rt.clu = &clusterState{recs: map[string]record{}, raw: map[string]string{}, sealed: map[string]map[string][]byte{}}
		rt.queues = newClusterQueues(rt.clu)
	}
	pid, err := opts.Kernel.SpawnRoot("channels", func() actor.Actor { return newSupervisor(rt) })
	if err != nil {
		return nil, err
	}
	s := &Service{rt: rt, pid: pid, loadConfig: opts.LoadConfig, env: opts.Env}
	// A service restarted on the same kernel replaces the previous one's
	// collector (same descriptions), so scrapes read the live supervisor.
	opts.Kernel.Metrics.Unregister(stateCollector{s: s})
	if err := opts.Kernel.Metrics.Register(stateCollector{s: s}); err != nil {
		return nil, err
	}
	return s, nil
}

// childPID is the address of channel name's actor.
func (s *Service) childPID(name string) (*actor.PID, bool) {
	pid := actor.NewPID(s.rt.k.System.Address(), s.pid.Id+"/channel/"+name)
	_, ok := s.rt.k.System.ProcessRegistry.Get(pid)
	return pid, ok
}

// View is one channel as GET /api/channels shows it.
type View struct {
	Name            string      `json:"name"`
	DisplayName     string      `json:"display_name"`
	Adapter         string      `json:"adapter"`
	Category        string      `json:"category"`
	Description     string      `json:"description"`
	SetupType       string      `json:"setup_type"`
	Enabled         bool        `json:"enabled"`
	Configured      bool        `json:"configured"`
	HasToken        bool        `json:"has_token"`
	Supported       bool        `json:"supported"`
	Source          string      `json:"source,omitempty"`
	AgentName       *string     `json:"agent_name"`
	Fields          []FieldView `json:"fields"`
	WebhookEndpoint string      `json:"webhook_endpoint,omitempty"`
	UpdatedAt       string      `json:"updated_at,omitempty"`
	Status
}

// FieldView is a schema field with whether it has a value; non-secret
// values are shown, secret ones never.
type FieldView struct {
	Key         string    `json:"key"`
	Label       string    `json:"label"`
	Type        FieldType `json:"type"`
	Required    bool      `json:"required"`
	EnvVar      *string   `json:"env_var"`
	Default     string    `json:"default,omitempty"`
	Placeholder string    `json:"placeholder,omitempty"`
	Advanced    bool      `json:"advanced"`
	HasValue    bool      `json:"has_value"`
	Value       any       `json:"value,omitempty"`
}

// snapshot is what the supervisor knows about one configured channel.
type snapshot struct {
	rec    record
	status Status
}

func (s *Service) view(spec *Spec, snap *snapshot) View {
	v := View{Name: spec.Name, DisplayName: spec.DisplayName, Adapter: spec.Name, Category: spec.Category,
		Description: spec.Description, SetupType: spec.SetupType}
	_, v.Supported = s.rt.builders[spec.Name]
	if spec.Webhook {
		v.WebhookEndpoint = "/channels/" + spec.Name + "/webhook"
	}
	var rec *record
	if snap != nil {
		rec = &snap.rec
		v.Name = rec.Name
		if rec.Name != spec.Name {
			v.DisplayName = spec.DisplayName + " (" + rec.Name + ")"
		}
		if spec.Webhook {
			v.WebhookEndpoint = "/channels/" + rec.Name + "/webhook"
		}
		v.Configured = true
		v.Source = rec.Source
		v.UpdatedAt = rec.UpdatedAt
		v.Status = snap.status
		if a := rec.Values[FieldAgent]; a != "" {
			v.AgentName = &a
		}
		v.Enabled = rec.Values[FieldEnabled] != "false"
		v.HasToken = true
	}
	switch {
	case !v.Supported:
		v.State = StateUnsupported
	case !v.Configured:
		v.State = StateUnconfigured
	case v.State == "":
		v.State = StateConnecting
	}
	for _, f := range spec.Fields {
		fv := FieldView{Key: f.Key, Label: f.Label, Type: f.Type, Required: f.Required,
			Default: f.Default, Placeholder: f.Placeholder, Advanced: f.Advanced}
		if f.EnvVar != "" {
			env := f.EnvVar
			fv.EnvVar = &env
		}
		if rec != nil {
			switch f.Type {
			case TypeSecret:
				fv.HasValue = slices.Contains(rec.Secrets, f.Key)
			case TypeList:
				if l := rec.Lists[f.Key]; len(l) > 0 {
					fv.HasValue, fv.Value = true, l
				}
			default:
				if val := rec.Values[f.Key]; val != "" {
					fv.HasValue, fv.Value = true, val
				}
			}
			if f.Type == TypeSecret && f.Required && !fv.HasValue {
				v.HasToken = false
			}
		}
		v.Fields = append(v.Fields, fv)
	}
	if rec != nil && len(rec.Secrets) == 0 && spec.PrimarySecret() != "" {
		v.HasToken = false
	}
	return v
}

func (s *Service) snapshots(ctx context.Context) (map[string]snapshot, error) {
	snaps, err := kernel.Ask[[]snapshot](ctx, s.rt.k, s.pid, &listChannels{})
	if err != nil {
		return nil, err
	}
	m := make(map[string]snapshot, len(snaps))
	for _, sn := range snaps {
		m[sn.rec.Name] = sn
	}
	return m, nil
}

// List returns every registry adapter (configured or not) and every extra
// configured instance; configuredOnly keeps the configured ones.
func (s *Service) List(ctx context.Context, configuredOnly bool) ([]View, error) {
	snaps, err := s.snapshots(ctx)
	if err != nil {
		return nil, err
	}
	var out []View
	for _, spec := range Specs() {
		sn, ok := snaps[spec.Name]
		if ok && sn.rec.Adapter == spec.Name {
			out = append(out, s.view(spec, &sn))
			delete(snaps, spec.Name)
		} else if !configuredOnly {
			out = append(out, s.view(spec, nil))
		}
	}
	// Extra instances ("support-bot" running telegram), by name.
	names := slices.Sorted(maps.Keys(snaps))
	for _, n := range names {
		sn := snaps[n]
		if spec, ok := Lookup(sn.rec.Adapter); ok {
			out = append(out, s.view(spec, &sn))
		}
	}
	return out, nil
}

// Get returns one channel: a configured one by its name, or a registry
// adapter that is not configured.
func (s *Service) Get(ctx context.Context, name string) (*View, error) {
	res, err := kernel.Ask[snapshotResult](ctx, s.rt.k, s.pid, &getChannel{name: name})
	if err != nil {
		return nil, err
	}
	if res.ok {
		spec, _ := Lookup(res.snap.rec.Adapter)
		v := s.view(spec, &res.snap)
		return &v, nil
	}
	spec, ok := Lookup(name)
	if !ok {
		return nil, kernel.NotFound("Unknown channel: %s", name)
	}
	v := s.view(spec, nil)
	return &v, nil
}

// HostedElsewhere is the cause of a "hosted_elsewhere" error: channel
// Channel runs on cluster node Node. transport/http forwards the request
// to that node (docs/cluster.md "Request routing"); the 409 is what a
// caller sees only when forwarding does not apply (an already forwarded
// request).
type HostedElsewhere struct {
	Channel string
	Node    string
}

func (h *HostedElsewhere) Error() string {
	return "channel " + h.Channel + " is hosted on node " + h.Node
}

// Host names the channel and its node, for request routing.
func (h *HostedElsewhere) Host() (what, node string) { return "channel " + h.Channel, h.Node }

// elsewhere is the answer for a cluster channel configured but not hosted
// on this node: its actor (and its fenced outbox) runs on the host only.
func (s *Service) elsewhere(ctx context.Context, name string, local bool) error {
	if s.rt.clu == nil || local {
		return nil
	}
	res, err := kernel.Ask[snapshotResult](ctx, s.rt.k, s.pid, &getChannel{name: name})
	if err != nil || !res.ok {
		return err
	}
	if n := res.snap.status.Node; n != "" {
		e := kernel.Errorf(kernel.KindConflict, "hosted_elsewhere", "channel %s runs on cluster node %s; send this request to that node", name, n)
		e.Err = &HostedElsewhere{Channel: name, Node: n}
		return e
	}
	return kernel.Errorf(kernel.KindUnavailable, "not_hosted", "channel %s is not running on any cluster node yet; try again in a few seconds", name)
}

// Has reports whether channel name is configured (comms.Channels). In
// cluster mode a channel another node hosts counts: Send then answers
// hosted_elsewhere, which the HTTP layer routes to the host.
func (s *Service) Has(name string) bool {
	if _, ok := s.childPID(name); ok {
		return true
	}
	if s.rt.clu == nil {
		return false
	}
	_, err := s.rt.record(name)
	return err == nil
}

// ConfigureResult answers POST /api/channels/{name}/configure.
type ConfigureResult struct {
	Status    string   `json:"status"`
	Channel   string   `json:"channel"`
	Adapter   string   `json:"adapter"`
	Activated bool     `json:"activated"`
	Created   bool     `json:"created"`
	Fields    []string `json:"fields"`
	Note      string   `json:"note,omitempty"`
}

// Configure validates body against the adapter's schema, stores the
// configuration (secrets in the vault) and (re)starts the channel. body is
// the flat form ({"token", "agent_name", <field>...}) or LibreFang's
// {"fields": {...}}, or both; "adapter" picks the platform for a channel
// whose name is not a registry adapter.
func (s *Service) Configure(ctx context.Context, name string, body map[string]any) (*ConfigureResult, error) {
	if !ValidName(name) {
		return nil, kernel.Invalid("channel name %q must be 1-64 characters of a-z, 0-9, _ and -, starting with a letter or digit", name)
	}
	fields := map[string]any{}
	adapter := ""
	for k, v := range body {
		switch k {
		case "fields":
			m, ok := v.(map[string]any)
			if !ok {
				return nil, kernel.Invalid(`field "fields" must be an object`)
			}
			for fk, fv := range m {
				fields[fk] = fv
			}
		case "adapter", "type":
			a, ok := v.(string)
			if !ok {
				return nil, kernel.Invalid("field %q must be a string", k)
			}
			adapter = a
		default:
			fields[k] = v
		}
	}
	if _, registry := Lookup(name); adapter == "" && !registry {
		// Reconfiguring an extra instance need not repeat its adapter,
		// as it need not repeat its token (docs/channels.md).
		res, err := kernel.Ask[snapshotResult](ctx, s.rt.k, s.pid, &getChannel{name: name})
		if err != nil {
			return nil, err
		}
		if res.ok {
			adapter = res.snap.rec.Adapter
		}
	}
	spec, err := s.resolveAdapter(name, adapter)
	if err != nil {
		return nil, err
	}
	if tok, ok := fields["token"]; ok {
		primary := spec.PrimarySecret()
		if primary == "" {
			return nil, kernel.Errorf(kernel.KindInvalid, "invalid_field", "field token: adapter %s has no secret", spec.Name)
		}
		delete(fields, "token")
		if _, dup := fields[primary]; dup {
			return nil, kernel.Errorf(kernel.KindInvalid, "invalid_field", "field token: both token and %s given", primary)
		}
		fields[primary] = tok
	}
	parsed, err := parseFields(spec, fields)
	if err != nil {
		return nil, fieldErr(err)
	}
	// Merge over the current configuration: a reconfigure need not repeat
	// the token.
	var cur *record
	res, err := kernel.Ask[snapshotResult](ctx, s.rt.k, s.pid, &getChannel{name: name})
	if err != nil {
		return nil, err
	}
	if res.ok {
		if res.snap.rec.Adapter != spec.Name {
			return nil, kernel.Conflict("channel %s runs adapter %s; delete it before configuring it as %s", name, res.snap.rec.Adapter, spec.Name)
		}
		cur = &res.snap.rec
	}
	d, err := s.prepare(ctx, name, spec, cur, parsed, SourceAPI)
	if err != nil {
		return nil, err
	}
	out, err := kernel.Ask[configureResult](ctx, s.rt.k, s.pid, &configure{rec: d.rec, secrets: d.secrets, account: d.account})
	if err == nil {
		err = out.err
	}
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, canonicalKey(spec, k))
	}
	sort.Strings(keys)
	result := &ConfigureResult{Status: "configured", Channel: name, Adapter: spec.Name, Activated: out.activated,
		Created: out.created, Fields: keys}
	if cur != nil && cur.Source == SourceConfig {
		result.Note = "this channel is defined in config.toml; the next reload applies the file's settings again"
	}
	return result, nil
}

// resolveAdapter finds the adapter a configure call is about.
func (s *Service) resolveAdapter(name, adapter string) (*Spec, error) {
	if _, ok := Lookup(name); ok {
		if adapter != "" && adapter != name {
			return nil, kernel.Invalid("channel %s is the %s adapter; pick another name for a %s instance", name, name, adapter)
		}
		adapter = name
	}
	if adapter == "" {
		return nil, kernel.NotFound("Unknown channel: %s (name a registry adapter, or give \"adapter\" for an extra instance)", name)
	}
	spec, ok := Lookup(adapter)
	if !ok {
		return nil, kernel.NotFound("Unknown adapter: %s", adapter)
	}
	if _, ok := s.rt.builders[adapter]; !ok {
		return nil, kernel.Errorf(kernel.KindUnsupported, "adapter_not_supported",
			"the %s adapter is listed but not built into this fangd (supported: %s)", adapter, strings.Join(s.rt.builders.Names(), ", "))
	}
	return spec, nil
}

// prepare is what a configure call and a config file table both go
// through: parsed merged over cur (nil for a new channel), marked with its
// source, validated.
func (s *Service) prepare(ctx context.Context, name string, spec *Spec, cur *record, parsed *parsedFields, source string) (*desiredChannel, error) {
	rec, secrets, err := s.merge(name, spec, cur, parsed)
	if err != nil {
		return nil, err
	}
	rec.Source = source
	cfg, err := s.validate(ctx, spec, &rec, secrets)
	if err != nil {
		return nil, err
	}
	return &desiredChannel{rec: rec, secrets: secrets, account: accountKey(cfg)}, nil
}

// merge applies parsed over cur (nil for a new channel) and loads the
// secrets that were not resubmitted from the vault.
func (s *Service) merge(name string, spec *Spec, cur *record, p *parsedFields) (record, map[string]string, error) {
	rec := record{Name: name, Adapter: spec.Name, Values: map[string]string{}, Lists: map[string][]string{}}
	secrets := map[string]string{}
	rec.Epoch = strconv.FormatInt(time.Now().UnixNano(), 36)
	if cur != nil {
		rec.AgentID = cur.AgentID
		if cur.Epoch != "" {
			rec.Epoch = cur.Epoch
		}
		for k, v := range cur.Values {
			rec.Values[k] = v
		}
		for k, v := range cur.Lists {
			rec.Lists[k] = v
		}
		for _, k := range cur.Secrets {
			if _, resubmitted := p.secrets[k]; resubmitted || p.cleared[k] {
				continue
			}
			err := s.rt.withSecret(name, k, func(b []byte) error { secrets[k] = string(b); return nil })
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return rec, nil, err
			}
		}
	}
	for k := range p.cleared {
		delete(rec.Values, k)
		delete(rec.Lists, k)
		delete(secrets, k)
	}
	for k, v := range p.values {
		rec.Values[k] = v
	}
	for k, v := range p.lists {
		rec.Lists[k] = v
	}
	for k, v := range p.secrets {
		secrets[k] = v
	}
	rec.Secrets = rec.Secrets[:0]
	for k := range secrets {
		rec.Secrets = append(rec.Secrets, k)
	}
	sort.Strings(rec.Secrets)
	rec.UpdatedAt = time.Now().UTC().Format(time.RFC3339)
	return rec, secrets, nil
}

// validate checks required fields, builds the adapter once (its own
// checks, no I/O) and resolves the bound agent.
func (s *Service) validate(ctx context.Context, spec *Spec, rec *record, secrets map[string]string) (*Config, error) {
	cfg := &Config{Name: rec.Name, Adapter: spec.Name, Spec: spec, Values: rec.Values, Lists: rec.Lists, Secrets: secrets, Log: s.rt.log, Net: s.rt.net}
	if err := checkRequired(cfg); err != nil {
		return nil, fieldErr(err)
	}
	if err := checkURLs(cfg); err != nil {
		return nil, err
	}
	if _, err := s.rt.builders[spec.Name](cfg); err != nil {
		return nil, fieldErr(err)
	}
	rec.AgentID = ""
	if ref := rec.Values[FieldAgent]; ref != "" && s.rt.agents != nil {
		id, _, err := s.rt.agents.Resolve(ctx, ref)
		if err != nil {
			if e := kernel.AsError(err); e != nil && e.Kind == kernel.KindNotFound {
				return nil, kernel.NotFound("field agent_name: no agent named %q", ref)
			}
			return nil, err
		}
		rec.AgentID = id
	}
	return cfg, nil
}

func fieldErr(err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return kernel.Errorf(kernel.KindInvalid, "invalid_field", "%s", fe.Error())
	}
	if kernel.AsError(err) != nil {
		return err
	}
	return kernel.Errorf(kernel.KindInvalid, "invalid_config", "%s", err.Error())
}

// accountKey fingerprints the platform account a configuration logs into
// ("" when its account fields are empty). Kept in memory only.
func accountKey(cfg *Config) string {
	fields := cfg.Spec.AccountFields()
	if len(fields) == 0 {
		return ""
	}
	h := sha256.New()
	h.Write([]byte(cfg.Adapter))
	empty := true
	for _, f := range fields {
		v := cfg.Secrets[f]
		if v == "" {
			v = cfg.Text(f)
		}
		if v != "" {
			empty = false
		}
		h.Write([]byte{0})
		h.Write([]byte(strings.ToLower(v)))
	}
	if empty {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Remove stops channel name and deletes its configuration, secrets and
// queued messages.
func (s *Service) Remove(ctx context.Context, name string) error {
	_, err := kernel.Ask[bool](ctx, s.rt.k, s.pid, &remove{name: name})
	return err
}

// Test sends a test message to chatID through the channel, or probes the
// platform identity when chatID is empty.
func (s *Service) Test(ctx context.Context, name, chatID string) (*TestResult, error) {
	pid, ok := s.childPID(name)
	if err := s.elsewhere(ctx, name, ok); err != nil {
		return nil, err
	}
	if !ok {
		if _, known := Lookup(name); !known {
			return nil, kernel.NotFound("Unknown channel: %s", name)
		}
		return nil, kernel.Errorf(kernel.KindPreconditionFailed, "not_configured", "channel %s is not configured", name)
	}
	// The platform call itself has its own timeout, shorter than ours.
	ctx, cancel := kernel.WithDefaultTimeout(ctx, testTimeout+5*time.Second)
	defer cancel()
	r, err := kernel.Ask[testResult](ctx, s.rt.k, pid, &testRequest{chatID: chatID})
	if err != nil {
		return nil, err
	}
	return r.res, r.err
}

// Send queues content for chatID on channel name through its durable
// outbox (comms.Channels); it returns once the message is on disk.
func (s *Service) Send(ctx context.Context, name, chatID, content string) error {
	_, err := s.SendMessage(ctx, name, chatID, content, "")
	return err
}

// SendMessage is Send that also returns the queued message ids.
func (s *Service) SendMessage(ctx context.Context, name, chatID, content, from string) ([]string, error) {
	pid, ok := s.childPID(name)
	if err := s.elsewhere(ctx, name, ok); err != nil {
		return nil, err
	}
	if !ok {
		return nil, kernel.NotFound("channel %q is not configured", name)
	}
	if strings.TrimSpace(chatID) == "" {
		return nil, kernel.Invalid("a chat id is required")
	}
	if strings.TrimSpace(content) == "" {
		return nil, kernel.Invalid("content is empty")
	}
	// At most DefaultAskTimeout, as before ctx came in.
	ctx, cancel := context.WithTimeout(ctx, kernel.DefaultAskTimeout)
	defer cancel()
	r, err := kernel.Ask[sendResult](ctx, s.rt.k, pid, &sendRequest{chatID: chatID, text: content, from: from})
	if err != nil {
		return nil, err
	}
	return r.ids, r.err
}

// Webhook hands a platform callback to channel name.
func (s *Service) Webhook(ctx context.Context, name string, req *WebhookRequest) (*WebhookResponse, error) {
	pid, ok := s.childPID(name)
	if !ok {
		return nil, kernel.NotFound("no channel named %s takes webhooks", name)
	}
	r, err := kernel.Ask[webhookResult](ctx, s.rt.k, pid, &webhookCall{req: req})
	if err != nil {
		return nil, err
	}
	return r.resp, r.err
}

// Reload re-reads config.toml's [channels.*] tables and reconciles.
func (s *Service) Reload(ctx context.Context) (*ReloadResult, error) {
	if s.loadConfig == nil {
		return nil, kernel.Errorf(kernel.KindPreconditionFailed, "no_config_file", "fangd was started without a config file to reload")
	}
	tables, err := s.loadConfig()
	if err != nil {
		return nil, kernel.Invalid("config.toml: %s", err.Error())
	}
	return s.Apply(ctx, tables)
}

// Apply reconciles the running channels with tables (the [channels.*]
// tables of config.toml): start new ones, stop removed ones, restart
// changed ones, leave the rest alone. A table that does not validate is
// reported and skipped; the others still apply.
func (s *Service) Apply(ctx context.Context, tables map[string]map[string]any) (*ReloadResult, error) {
	if s.rt.clu != nil {
		// Every node has its own config.toml; etcd has one set of
		// channels. Cluster channels are configured through the API.
		return nil, kernel.Errorf(kernel.KindConflict, "cluster_mode",
			"config.toml channels are not applied in cluster mode; configure channels through the API (stored cluster-wide in etcd)")
	}
	var desired []desiredChannel
	var problems []string
	names := slices.Sorted(maps.Keys(tables))
	for _, name := range names {
		d, err := s.fromTable(ctx, name, tables[name])
		if err != nil {
			problems = append(problems, fmt.Sprintf("channels.%s: %s", name, kernel.PublicMessage(err)))
			continue
		}
		desired = append(desired, *d)
	}
	res, err := kernel.Ask[ReloadResult](ctx, s.rt.k, s.pid, &reload{desired: desired})
	if err != nil {
		return nil, err
	}
	res.Errors = append(problems, res.Errors...)
	return &res, nil
}

// Check validates tables (the [channels.*] tables of config.toml) as
// Apply would, agent names included, and changes nothing: one problem per
// table that would be skipped.
func (s *Service) Check(ctx context.Context, tables map[string]map[string]any) []string {
	return s.check(ctx, tables)
}

// CheckTables validates tables without a running daemon (fangd config
// check): adapters, fields, required secrets and their variables. Agent
// names are not checked, since no agents are loaded.
func CheckTables(builders Builders, tables map[string]map[string]any, env func(string) string) []string {
	if env == nil {
		env = osGetenv
	}
	s := &Service{rt: &runtime{builders: builders, log: zerolog.Nop()}, env: env}
	return s.check(context.Background(), tables)
}

func (s *Service) check(ctx context.Context, tables map[string]map[string]any) []string {
	names := slices.Sorted(maps.Keys(tables))
	var problems []string
	for _, name := range names {
		if _, err := s.fromTable(ctx, name, tables[name]); err != nil {
			problems = append(problems, fmt.Sprintf("channels.%s: %s", name, kernel.PublicMessage(err)))
		}
	}
	return problems
}

// fromTable turns one [channels.<name>] table into a desired channel.
// Secrets come from "<key>_env" (an environment variable's name), a
// literal "<key>", or the field's default environment variable.
func (s *Service) fromTable(ctx context.Context, name string, table map[string]any) (*desiredChannel, error) {
	if !ValidName(name) {
		return nil, kernel.Invalid("invalid channel name")
	}
	adapter := name
	fields := map[string]any{}
	for k, v := range table {
		if k == "adapter" {
			a, ok := v.(string)
			if !ok {
				return nil, kernel.Invalid("adapter must be a string")
			}
			adapter = a
			continue
		}
		fields[k] = v
	}
	spec, err := s.resolveAdapter(name, adapter)
	if err != nil {
		return nil, err
	}
	envSecrets := map[string]string{}
	for _, f := range spec.Fields {
		if f.Type != TypeSecret {
			continue
		}
		if v, ok := fields[f.Key+"_env"]; ok {
			envName, ok := v.(string)
			if !ok {
				return nil, kernel.Invalid("field %s_env must name an environment variable", f.Key)
			}
			delete(fields, f.Key+"_env")
			val := s.env(envName)
			if val == "" {
				return nil, kernel.Invalid("field %s_env: environment variable %s is not set", f.Key, envName)
			}
			envSecrets[f.Key] = val
		} else if _, literal := fields[f.Key]; !literal && f.EnvVar != "" {
			if val := s.env(f.EnvVar); val != "" {
				envSecrets[f.Key] = val
			}
		}
	}
	parsed, err := parseFields(spec, fields)
	if err != nil {
		return nil, fieldErr(err)
	}
	for k, v := range envSecrets {
		parsed.secrets[k] = strings.TrimSpace(v)
	}
	return s.prepare(ctx, name, spec, nil, parsed, SourceConfig)
}
