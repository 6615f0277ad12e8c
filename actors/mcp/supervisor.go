package mcp

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/neterr"
)

// Where a definition comes from: config.toml (read-only through the API;
// edit the file and reload) or the API (kept in the store).
const (
	sourceConfig = "config"
	sourceAPI    = "api"
)

type definition struct {
	spec   Spec
	source string
	// clustered: an API-defined server in cluster mode (cluster.go), run
	// by node; mine when that is this node.
	clustered bool
	node      string
	mine      bool
	// For a config.toml server in cluster mode (clusterconf.go):
	// elsewhere when only other nodes' files list it (spec holds only
	// what their adverts say), listing the nodes that list it, differs
	// when their specs differ.
	elsewhere bool
	listing   []ConfigAd
	differs   bool
}

// supervisor is the root actor "mcp". It owns the set of server
// definitions and the catalog snapshot, spawns one connection actor per
// definition, and keeps the latest state each connection reports so that
// listings and health need no fan-out.
type supervisor struct {
	env      *env
	m        *Manager
	defs     map[string]definition
	children map[string]*actor.PID
	lines    map[string]*callLine // each child's call line, for the tool index
	byPID    map[string]string    // child pid id -> server name
	states   map[string]serverState
	// A removed server's actor may still be stopping when the same name is
	// added again; the new one is spawned when the old one has terminated.
	stoppingNames map[string]bool
	pending       map[string]bool
	// crashed: servers whose actor supervision stopped; in cluster mode
	// the rounds do not restart them (a new definition does, as on one
	// node).
	crashed map[string]bool
}

func (s *supervisor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		s.started(c)
	case *serverReport:
		if d, ok := s.defs[m.name]; ok && (!d.clustered || d.mine) {
			s.states[m.name] = m.state
			s.publishIndex()
			if d.clustered {
				s.publishView(m.name, m.state)
			}
		}
	case *clusterView:
		s.applyCluster(c, m)
	case *configView:
		s.applyConfig(c, m)
	case *actor.Terminated:
		s.terminated(c, m)
	case *listServers:
		c.Respond(s.views())
	case *getServer:
		d, ok := s.defs[m.name]
		if !ok {
			c.Respond(notFound(m.name))
			return
		}
		c.Respond(view(d, s.states[m.name]))
	case *healthQuery:
		out := make([]HealthEntry, 0, len(s.defs))
		for _, v := range s.views() {
			out = append(out, health(v.Name, s.states[v.Name]))
		}
		c.Respond(out)
	case *childOf:
		pid, ok := s.children[m.name]
		if d, known := s.defs[m.name]; !ok && known && d.clustered && !d.mine {
			if d.node == "" {
				c.Respond(kernel.Errorf(kernel.KindUnavailable, "host_unreachable", "MCP server %s runs on no cluster node right now; try again", m.name))
			} else {
				c.Respond(&HostedElsewhere{Server: m.name, Node: d.node})
			}
			return
		}
		if !ok {
			c.Respond(notFound(m.name))
			return
		}
		c.Respond(pid)
	case *addServer:
		v, err := s.add(c, m.req)
		respond(c, v, err)
	case *updateServer:
		v, err := s.update(c, m.name, m.spec)
		respond(c, v, err)
	case *removeServer:
		if err := s.remove(c, m.name); err != nil {
			c.Respond(err)
			return
		}
		c.Respond(&removed{})
	case *reload:
		r, err := s.reload(c, m)
		respond(c, r, err)
	case *getCatalog:
		installed := map[string]bool{}
		for _, d := range s.defs {
			if d.spec.TemplateID != "" {
				installed[d.spec.TemplateID] = true
			}
		}
		c.Respond(&catalogReply{catalog: s.m.catalog.Load(), installed: installed})
	}
}

func respond[T any](c actor.Context, v T, err error) {
	if err != nil {
		c.Respond(err)
		return
	}
	c.Respond(v)
}

func notFound(name string) error {
	return kernel.Errorf(kernel.KindNotFound, "not_found", "MCP server '%s' not found", name)
}

// started (re)builds everything from config and the store: a restart of
// this actor stopped every child, and a daemon restart is the same case.
func (s *supervisor) started(c actor.Context) {
	s.defs = map[string]definition{}
	s.children = map[string]*actor.PID{}
	s.lines = map[string]*callLine{}
	s.byPID = map[string]string{}
	s.states = map[string]serverState{}
	s.stoppingNames = map[string]bool{}
	s.pending = map[string]bool{}
	s.crashed = map[string]bool{}
	if s.env.opts.Clustered {
		// API-defined servers come from etcd with the ownership rounds
		// (applyCluster); this node's store is not read. config.toml's
		// run where their round says (applyConfig): nothing starts here
		// before one does.
		for _, sp := range s.m.configSpecs() {
			s.defs[sp.Name] = definition{spec: sp, source: sourceConfig, clustered: true}
		}
		s.publishIndex()
		return
	}
	for _, sp := range s.m.configSpecs() {
		s.defs[sp.Name] = definition{spec: sp, source: sourceConfig}
	}
	_, err := s.env.servers.EachOrQuarantine(func(name string, sp Spec) bool {
		if d, dup := s.defs[name]; dup && d.source == sourceConfig {
			s.env.log.Warn().Str("mcp_server", name).Msg("a server added through the API has the name of one in config.toml; config.toml wins")
			return true
		}
		s.defs[name] = definition{spec: sp, source: sourceAPI}
		return true
	})
	if err != nil {
		s.env.log.Error().Err(err).Msg("could not load stored MCP servers")
	}
	for name := range s.defs {
		s.spawn(c, name)
	}
	s.publishIndex()
}

func (s *supervisor) spawn(c actor.Context, name string) {
	if s.stoppingNames[name] {
		s.pending[name] = true
		return
	}
	delete(s.crashed, name)
	spec := s.defs[name].spec
	line := &callLine{}
	pid, err := c.SpawnNamed(s.env.k.Props(func() actor.Actor { return newConn(s.env, spec, line) }), name)
	if err != nil {
		s.env.log.Error().Err(err).Str("mcp_server", name).Msg("could not start the connection actor")
		s.states[name] = serverState{Status: StatusError, LastError: "could not start: " + err.Error()}
		return
	}
	s.children[name] = pid
	s.lines[name] = line
	s.byPID[pid.Id] = name
}

func (s *supervisor) stopChild(c actor.Context, name string) {
	if pid, ok := s.children[name]; ok {
		delete(s.children, name)
		delete(s.lines, name)
		s.stoppingNames[name] = true
		c.Stop(pid)
	}
}

func (s *supervisor) terminated(c actor.Context, m *actor.Terminated) {
	name, ok := s.byPID[m.Who.Id]
	if !ok {
		return
	}
	delete(s.byPID, m.Who.Id)
	if s.stoppingNames[name] {
		delete(s.stoppingNames, name)
		if s.pending[name] {
			delete(s.pending, name)
			if _, still := s.defs[name]; still {
				s.spawn(c, name)
			}
		}
		return
	}
	// Stopped by supervision (it kept crashing): the definition stays, the
	// server is reported down until it is reconfigured or reloaded.
	delete(s.children, name)
	delete(s.lines, name)
	if d, still := s.defs[name]; still {
		st := s.states[name]
		st.Status = StatusError
		st.Tools = nil
		st.LastError = "connection actor stopped after repeated crashes; PUT the server or POST /api/mcp/reload to restart it"
		s.states[name] = st
		s.crashed[name] = true
		s.publishIndex()
		if d.clustered && d.mine {
			s.publishView(name, st)
		}
	}
}

func (s *supervisor) views() []ServerView {
	names := make([]string, 0, len(s.defs))
	for n := range s.defs {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]ServerView, 0, len(names))
	for _, n := range names {
		out = append(out, view(s.defs[n], s.states[n]))
	}
	return out
}

// add validates, stores the definition (secrets to the vault first, so a
// stored spec never names a secret that is not there), and spawns the
// connection. Anything that fails leaves nothing behind.
func (s *supervisor) add(c actor.Context, req AddRequest) (ServerView, error) {
	var spec Spec
	secrets := map[string]string{}
	if req.Install {
		entry, ok := s.m.catalog.Load().Get(req.TemplateID)
		if !ok {
			return ServerView{}, kernel.Errorf(kernel.KindNotFound, "unknown_template", "MCP catalog entry '%s' not found", req.TemplateID)
		}
		name := req.Name
		if name == "" {
			name = entry.ID
		}
		spec = entry.spec(name)
		if err := spec.Validate(); err != nil {
			return ServerView{}, err
		}
		for k := range req.Credentials {
			if !slices.ContainsFunc(entry.RequiredEnv, func(r RequiredEnv) bool { return r.Name == k }) {
				return ServerView{}, kernel.Invalid("credential %s is not used by catalog entry %s", k, entry.ID)
			}
		}
		for _, r := range entry.RequiredEnv {
			v := req.Credentials[r.Name]
			if strings.TrimSpace(v) == "" {
				return ServerView{}, kernel.Errorf(kernel.KindInvalid, "missing_credential", "missing required credential %s (%s) for catalog entry %s", r.Name, r.Label, entry.ID)
			}
			secrets[envKey(name, r.Name)] = v
		}
	} else {
		spec = req.Spec
		if err := spec.Validate(); err != nil {
			return ServerView{}, err
		}
		for _, h := range spec.Headers {
			if !strings.Contains(h, ":") {
				return ServerView{}, kernel.Invalid("header entry %q needs a value: \"Name: value\"", h)
			}
		}
		if spec.TemplateID != "" {
			if _, ok := s.m.catalog.Load().Get(spec.TemplateID); !ok {
				return ServerView{}, kernel.Errorf(kernel.KindNotFound, "unknown_template", "MCP catalog entry '%s' not found", spec.TemplateID)
			}
		}
		var inline map[string]string
		spec, inline = splitSecrets(spec)
		for k, v := range inline {
			secrets[k] = v
		}
	}
	if _, dup := s.defs[spec.Name]; dup {
		return ServerView{}, kernel.Conflict("MCP server '%s' already exists", spec.Name)
	}
	if err := s.checkReachable(spec); err != nil {
		return ServerView{}, err
	}
	if s.env.opts.Clustered {
		// Stored in etcd; the ownership round starts it on one node.
		if err := s.persistCluster(spec, secrets, nil, true); err != nil {
			return ServerView{}, err
		}
		s.defs[spec.Name] = definition{spec: spec, source: sourceAPI, clustered: true}
		s.states[spec.Name] = serverState{}
		return view(s.defs[spec.Name], s.states[spec.Name]), nil
	}
	if err := s.persist(spec, secrets, nil); err != nil {
		return ServerView{}, err
	}
	s.defs[spec.Name] = definition{spec: spec, source: sourceAPI}
	s.states[spec.Name] = serverState{}
	s.spawn(c, spec.Name)
	return view(s.defs[spec.Name], s.states[spec.Name]), nil
}

// checkReachable refuses, before anything is stored, a stdio command that
// does not resolve to an executable and a URL the network policy refuses.
func (s *supervisor) checkReachable(spec Spec) error {
	if spec.Transport.Type == TransportStdio {
		if _, err := exec.LookPath(spec.Transport.Command); err != nil {
			return kernel.Errorf(kernel.KindInvalid, "command_not_found", "transport.command %q: command not found", spec.Transport.Command)
		}
		return nil
	}
	if s.env.opts.Policy == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.env.opts.Policy.Check(ctx, spec.Transport.URL); err != nil {
		// url_not_allowed names the rule; a host that does not resolve is
		// host_not_found, not a refusal.
		return neterr.Classify(err, "transport.url")
	}
	return nil
}

// persist writes secrets, then the spec; it removes the vault entries in
// drop afterwards. On failure it undoes the secrets it wrote.
func (s *supervisor) persist(spec Spec, secrets map[string]string, drop []string) error {
	var written []string
	undo := func() {
		for _, k := range written {
			_ = s.env.vault.Delete(k)
		}
	}
	for k, v := range secrets {
		if s.env.vault == nil {
			return kernel.Unavailable("the vault is not available to store credentials")
		}
		if err := s.env.vault.Put(k, []byte(v)); err != nil {
			undo()
			return fmt.Errorf("store credential: %w", err)
		}
		written = append(written, k)
	}
	if err := s.env.servers.Put(spec.Name, spec); err != nil {
		undo()
		return fmt.Errorf("store server: %w", err)
	}
	for _, k := range drop {
		if err := s.env.vault.Delete(k); err != nil {
			s.env.log.Error().Err(err).Str("mcp_server", spec.Name).Msg("could not delete an unused credential")
		}
	}
	return nil
}

// update replaces an API-defined server. Env names and header names given
// without a value keep their stored secret; values no longer named are
// deleted from the vault.
func (s *supervisor) update(c actor.Context, name string, spec Spec) (ServerView, error) {
	d, ok := s.defs[name]
	if !ok {
		return ServerView{}, notFound(name)
	}
	if d.source == sourceConfig {
		return ServerView{}, kernel.Errorf(kernel.KindConflict, "defined_in_config", "MCP server '%s' is defined in config.toml; edit the file and POST /api/mcp/reload", name)
	}
	if spec.Name != "" && spec.Name != name {
		return ServerView{}, kernel.Invalid("name %q in the body differs from %q in the path; servers cannot be renamed", spec.Name, name)
	}
	spec.Name = name
	if err := spec.Validate(); err != nil {
		return ServerView{}, err
	}
	if spec.TemplateID != "" {
		if _, ok := s.m.catalog.Load().Get(spec.TemplateID); !ok {
			return ServerView{}, kernel.Errorf(kernel.KindNotFound, "unknown_template", "MCP catalog entry '%s' not found", spec.TemplateID)
		}
	}
	if err := s.checkReachable(spec); err != nil {
		return ServerView{}, err
	}
	stored, secrets := splitSecrets(spec)
	for _, h := range stored.Headers {
		if strings.Contains(h, ":") {
			continue
		}
		if _, given := secrets[headerKey(name, h)]; given {
			continue
		}
		has, err := s.env.vault.Has(headerKey(name, h))
		if err != nil {
			return ServerView{}, err
		}
		if !has {
			return ServerView{}, kernel.Invalid("header %s has no stored value; give it as \"%s: value\"", h, h)
		}
	}
	keep := map[string]bool{}
	for _, k := range vaultKeys(stored) {
		keep[k] = true
	}
	if stored.Transport.URL != d.spec.Transport.URL {
		// Tokens are bound to the server that issued them.
		delete(keep, oauthKey(name))
	}
	var drop []string
	for _, k := range vaultKeys(d.spec) {
		if !keep[k] {
			drop = append(drop, k)
		}
	}
	if d.clustered {
		if err := s.persistCluster(stored, secrets, drop, false); err != nil {
			return ServerView{}, err
		}
		d.spec = stored
		s.defs[name] = d
		if d.mine {
			s.reapply(c, name)
		}
		// Elsewhere, its host reconnects on its next round.
		return view(s.defs[name], s.states[name]), nil
	}
	if err := s.persist(stored, secrets, drop); err != nil {
		return ServerView{}, err
	}
	s.defs[name] = definition{spec: stored, source: sourceAPI}
	s.reapply(c, name)
	return view(s.defs[name], s.states[name]), nil
}

// reapply hands a changed definition to its connection (or starts one).
func (s *supervisor) reapply(c actor.Context, name string) {
	st := s.states[name]
	st.Status = StatusConnecting
	st.Tools = nil
	s.states[name] = st
	if pid, ok := s.children[name]; ok {
		c.Send(pid, &applySpec{spec: s.defs[name].spec})
	} else {
		s.spawn(c, name)
	}
	s.publishIndex()
}

func (s *supervisor) remove(c actor.Context, name string) error {
	d, ok := s.defs[name]
	if !ok {
		return notFound(name)
	}
	if d.source == sourceConfig {
		return kernel.Errorf(kernel.KindConflict, "defined_in_config", "MCP server '%s' is defined in config.toml; remove it there and POST /api/mcp/reload", name)
	}
	if d.clustered {
		if err := s.removeCluster(name); err != nil {
			return err
		}
		s.forget(c, name)
		return nil
	}
	if err := s.env.servers.Delete(name); err != nil {
		return err
	}
	s.forget(c, name)
	for _, k := range vaultKeys(d.spec) {
		if err := s.env.vault.Delete(k); err != nil {
			s.env.log.Error().Err(err).Str("mcp_server", name).Msg("could not delete a credential")
		}
	}
	return nil
}

// forget stops a server's connection and drops everything held about it.
func (s *supervisor) forget(c actor.Context, name string) {
	s.stopChild(c, name)
	delete(s.defs, name)
	delete(s.states, name)
	delete(s.pending, name)
	delete(s.crashed, name)
	if err := s.env.pins.Delete(name); err != nil {
		s.env.log.Error().Err(err).Str("mcp_server", name).Msg("could not delete tool pins")
	}
	s.publishIndex()
}

// reload re-reads the catalog directory and config.toml and applies the
// difference: new servers start, removed ones stop, changed ones (and
// catalog installs whose template moved) reconnect; the rest are left
// alone. Any error leaves everything as it was.
func (s *supervisor) reload(c actor.Context, m *reload) (*ReloadReply, error) {
	cat, err := LoadCatalog(s.env.opts.CatalogDir)
	if err != nil {
		return nil, err
	}
	specs := s.m.configSpecs()
	if m.given {
		specs = m.servers
	} else if s.env.opts.LoadServers != nil {
		if specs, err = s.env.opts.LoadServers(); err != nil {
			return nil, kernel.Invalid("config: %v", err)
		}
	}
	fresh := map[string]Spec{}
	for _, sp := range specs {
		if err := sp.Validate(); err != nil {
			return nil, kernel.Invalid("config mcp_servers %s: %s", sp.Name, err.Error())
		}
		if _, dup := fresh[sp.Name]; dup {
			return nil, kernel.Invalid("config mcp_servers: %s is defined twice", sp.Name)
		}
		if d, ok := s.defs[sp.Name]; ok && d.source == sourceAPI {
			return nil, kernel.Conflict("config.toml defines %s, which was added through the API; delete one of them", sp.Name)
		}
		fresh[sp.Name] = sp
	}
	// Catalog installs whose template changed transport or headers.
	moved := map[string]Spec{}
	for name, d := range s.defs {
		if d.source != sourceAPI || d.spec.TemplateID == "" {
			continue
		}
		e, ok := cat.Get(d.spec.TemplateID)
		if !ok {
			continue
		}
		tmpl := e.spec(name)
		if !equalDefinition(Spec{Transport: tmpl.Transport, Headers: tmpl.Headers}, Spec{Transport: d.spec.Transport, Headers: d.spec.Headers}) {
			next := d.spec
			next.Transport, next.Headers = tmpl.Transport, tmpl.Headers
			if err := next.Validate(); err != nil {
				return nil, kernel.Invalid("catalog entry %s no longer fits server %s: %s", e.ID, name, err.Error())
			}
			moved[name] = next
		}
	}
	for name, sp := range moved {
		if s.defs[name].clustered {
			if err := s.persistCluster(sp, nil, nil, false); err != nil {
				return nil, err
			}
			continue
		}
		if err := s.env.servers.Put(name, sp); err != nil {
			return nil, err
		}
	}
	// Everything is checked and stored: apply.
	s.m.catalog.Store(cat)
	s.m.setConfigSpecs(specs)
	r := &ReloadReply{Status: "reloaded", Added: []string{}, Removed: []string{}, Reconnected: []string{}, Catalog: cat.Len()}
	for name, d := range s.defs {
		if d.source != sourceConfig || d.elsewhere {
			continue
		}
		if _, still := fresh[name]; !still {
			s.forget(c, name)
			r.Removed = append(r.Removed, name)
		}
	}
	for name, sp := range fresh {
		d, existed := s.defs[name]
		if s.env.opts.Clustered {
			s.reloadClustered(c, r, name, sp, d, existed)
			continue
		}
		s.defs[name] = definition{spec: sp, source: sourceConfig}
		switch {
		case !existed:
			s.states[name] = serverState{}
			s.spawn(c, name)
			r.Added = append(r.Added, name)
		case !equalDefinition(d.spec, sp):
			s.reapply(c, name)
			r.Reconnected = append(r.Reconnected, name)
		}
	}
	for name, sp := range moved {
		d := s.defs[name]
		d.spec = sp
		s.defs[name] = d
		if d.clustered && !d.mine {
			continue // its host reconnects on its next round
		}
		s.reapply(c, name)
		r.Reconnected = append(r.Reconnected, name)
	}
	sort.Strings(r.Added)
	sort.Strings(r.Removed)
	sort.Strings(r.Reconnected)
	s.publishIndex()
	s.m.advertiseConfig()
	return r, nil
}

// publishIndex rebuilds the index of proxied tools. Tools of a server
// that is down stay routable (its actor answers at once that it is down,
// which says more than "unknown tool") but are not listed.
func (s *supervisor) publishIndex() {
	names := make([]string, 0, len(s.states))
	for n := range s.states {
		names = append(names, n)
	}
	sort.Strings(names)
	idx := &toolIndex{byName: map[string]indexedTool{}}
	for _, n := range names {
		st := s.states[n]
		pid := s.children[n]
		if d := s.defs[n]; d.clustered && !d.mine {
			s.indexRemote(idx, n, d, st)
			continue
		}
		if pid == nil || st.Status == StatusDisabled {
			continue
		}
		for _, t := range st.Tools {
			if t.Quarantined && st.Status == StatusConnected {
				// Routed, so that a call is refused with the reason.
				idx.byName[t.Name] = indexedTool{Server: n, PID: pid, line: s.lines[n], Info: t}
				continue
			}
			if prev, clash := idx.byName[t.Name]; clash {
				s.env.log.Warn().Str("tool", t.Name).Str("kept", prev.Server).Str("dropped", n).Msg("two MCP servers map to the same tool name")
				continue
			}
			it := indexedTool{Server: n, PID: pid, line: s.lines[n], Info: t}
			idx.byName[t.Name] = it
			if st.Status == StatusConnected {
				idx.list = append(idx.list, it)
			}
		}
	}
	s.m.setIndex(idx)
}
