package a2a

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/a2aproject/a2a-go/v2/a2acompat/a2av0"
	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/transport/neterr"
	"github.com/fangd/fangd/transport/ssrf"
)

// ExternalAgent is an A2A agent fangd discovered and may send tasks to.
type ExternalAgent struct {
	// ID is stable: derived from the canonical discovery URL, so
	// discovering the same agent again updates it.
	ID           string       `json:"id"`
	Name         string       `json:"name"`
	URL          string       `json:"url"`
	CardURL      string       `json:"card_url"`
	Description  string       `json:"description"`
	Version      string       `json:"version"`
	Skills       []Skill      `json:"skills"`
	Capabilities Capabilities `json:"capabilities"`
	Interfaces   []Interface  `json:"interfaces"`
	// Status is "trusted": an operator (API key) discovered it.
	Status       string    `json:"status"`
	HasToken     bool      `json:"has_token"`
	DiscoveredAt time.Time `json:"discovered_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	// Card is the card as parsed (1.0 form); kept for the client.
	Card *a2a.AgentCard `json:"card,omitempty"`
}

// Skill is one skill of an external agent's card.
type Skill struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Tags        []string `json:"tags"`
}

// Capabilities are the card's optional features.
type Capabilities struct {
	Streaming         bool `json:"streaming"`
	PushNotifications bool `json:"pushNotifications"`
}

// Interface is one endpoint of an external agent.
type Interface struct {
	URL             string `json:"url"`
	ProtocolBinding string `json:"protocolBinding"`
	ProtocolVersion string `json:"protocolVersion"`
}

// Summary is the agent without its raw card (for listings).
func (a ExternalAgent) Summary() ExternalAgent {
	a.Card = nil
	return a
}

// agentTokenName is the vault name of the bearer token fangd presents to
// an external agent.
func agentTokenName(id string) string { return "a2a/agent/" + id + "/token" }

// CanonicalURL normalises a discovery URL: lower-case scheme and host, no
// default port, no fragment or empty query, no trailing slash. Two ways of
// writing one agent's URL give one id.
func CanonicalURL(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", kernel.Errorf(kernel.KindInvalid, "a2a_missing_url", "url is required")
	}
	if len(raw) > 2048 {
		return "", kernel.Errorf(kernel.KindInvalid, "a2a_invalid_url", "url is longer than 2048 characters")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", kernel.Errorf(kernel.KindInvalid, "a2a_invalid_url", "url must be an absolute http(s) URL")
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", kernel.Errorf(kernel.KindInvalid, "a2a_invalid_url", "url scheme %q is not allowed; use http or https", u.Scheme)
	}
	if u.User != nil {
		return "", kernel.Errorf(kernel.KindInvalid, "a2a_invalid_url", "url must not carry user:password; give a token instead")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (u.Scheme == "http" && port == "80") || (u.Scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	u.Host = host
	if port != "" {
		u.Host += ":" + port
	}
	u.Fragment, u.RawFragment = "", ""
	u.ForceQuery = false
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u.String(), nil
}

func agentIDFor(canonical string) string {
	sum := sha256.Sum256([]byte(canonical))
	return hex.EncodeToString(sum[:8])
}

// Discover fetches and stores the card of the agent at rawURL: the URL is
// SSRF-checked, then /.well-known/agent-card.json is tried and
// /.well-known/agent.json after it (a URL ending in .json is fetched as
// is), each within the discovery timeout and size cap and without
// following redirects. token, when set, is kept in the vault and presented
// as a bearer token on every call to the agent. created is false when the
// agent was known and has been updated.
func (s *Service) Discover(ctx context.Context, rawURL string, token []byte) (ExternalAgent, bool, error) {
	defer store.Wipe(token)
	canonical, err := CanonicalURL(rawURL)
	if err != nil {
		return ExternalAgent{}, false, err
	}
	if _, err := s.guard.Check(ctx, canonical); err != nil {
		return ExternalAgent{}, false, netError(err, "agent")
	}
	card, cardURL, err := s.fetchCard(ctx, canonical)
	if err != nil {
		return ExternalAgent{}, false, err
	}
	agent := ExternalAgent{
		ID: agentIDFor(canonical), Name: card.Name, URL: canonical, CardURL: cardURL,
		Description: card.Description, Version: card.Version, Status: "trusted",
		Capabilities: Capabilities{Streaming: card.Capabilities.Streaming, PushNotifications: card.Capabilities.PushNotifications},
		Skills:       []Skill{}, Card: card,
	}
	for _, sk := range card.Skills {
		agent.Skills = append(agent.Skills, Skill{ID: sk.ID, Name: sk.Name, Description: sk.Description, Tags: nonNil(sk.Tags)})
	}
	for _, in := range card.SupportedInterfaces {
		agent.Interfaces = append(agent.Interfaces, Interface{URL: in.URL, ProtocolBinding: string(in.ProtocolBinding), ProtocolVersion: string(in.ProtocolVersion)})
	}
	var tok []byte
	if len(token) > 0 {
		tok = bytes.Clone(token)
	}
	reply, err := kernel.Ask[*putAgentReply](ctx, s.k, s.sup, &putAgent{agent: agent, token: tok})
	if err != nil {
		return ExternalAgent{}, false, err
	}
	return reply.Agent, reply.Created, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// cardCandidates are the URLs a card is looked for at, in order.
func cardCandidates(canonical string) []string {
	if u, err := url.Parse(canonical); err == nil && strings.HasSuffix(strings.ToLower(u.Path), ".json") {
		return []string{canonical}
	}
	return []string{canonical + "/.well-known/agent-card.json", canonical + "/.well-known/agent.json"}
}

// fetchCard tries each candidate in turn; the error names what each gave.
func (s *Service) fetchCard(ctx context.Context, canonical string) (*a2a.AgentCard, string, error) {
	client := s.guard.Client(s.opts.DiscoveryTimeout)
	var problems []string
	for _, cu := range cardCandidates(canonical) {
		card, err := s.fetchOne(ctx, client, cu)
		if err == nil {
			return card, cu, nil
		}
		// A refusal or a network failure is the same for every
		// candidate: say it once, with its own code.
		var de *kernel.Error
		if errors.As(err, &de) && de.Code != "" {
			return nil, "", err
		}
		problems = append(problems, cu+": "+err.Error())
	}
	return nil, "", kernel.Errorf(kernel.KindUpstream, "a2a_discovery_failed", "no usable agent card: %s", strings.Join(problems, "; "))
}

func (s *Service) fetchOne(ctx context.Context, client *http.Client, cardURL string) (*a2a.AgentCard, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.DiscoveryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cardURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, netError(err, "agent card")
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return nil, fmt.Errorf("answered %d (redirect to %q not followed)", resp.StatusCode, resp.Header.Get("Location"))
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("answered HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, s.opts.MaxCardBytes+1))
	if err != nil {
		return nil, netError(err, "agent card")
	}
	if int64(len(body)) > s.opts.MaxCardBytes {
		return nil, fmt.Errorf("card is larger than %d bytes", s.opts.MaxCardBytes)
	}
	return s.parseCard(ctx, body)
}

// netError is a guard refusal or a network failure as a domain error:
// a2a_ssrf_blocked (LibreFang's code) naming the rule for a refusal, and
// transport/neterr's codes (host_not_found, connection_refused,
// upstream_timeout, tls_failed ...) for the rest, never the URL itself.
// A Guard that is not transport/ssrf (tests) has its refusal text shown.
func netError(err error, target string) *kernel.Error {
	if !neterr.Network(err) || ssrf.IsBlocked(err) {
		msg := err.Error()
		if code, cause := neterr.Cause(err); neterr.IsPolicy(code) {
			msg = cause
		}
		return &kernel.Error{Kind: kernel.KindInvalid, Code: "a2a_ssrf_blocked", Msg: target + ": " + msg, Err: err}
	}
	e := neterr.Classify(err, target)
	if neterr.IsPolicy(e.Code) {
		e.Code = "a2a_ssrf_blocked"
	}
	return e
}

// parseCard accepts a 1.0 card, a 0.3 card, or the seed's card (name, url,
// no interfaces: treated as JSON-RPC 0.3 at url), and checks the fields a
// client needs.
func (s *Service) parseCard(ctx context.Context, body []byte) (*a2a.AgentCard, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(body, &probe); err != nil {
		return nil, errors.New("card is not a JSON object")
	}
	card, err := a2av0.NewAgentCardParser()(body)
	if err != nil {
		return nil, fmt.Errorf("card does not parse: %s", err.Error())
	}
	if strings.TrimSpace(card.Name) == "" {
		return nil, errors.New("card lacks the required field \"name\"")
	}
	if len(card.SupportedInterfaces) == 0 {
		var seed struct {
			URL string `json:"url"`
		}
		_ = json.Unmarshal(body, &seed)
		if seed.URL == "" {
			return nil, errors.New("card lacks both \"supportedInterfaces\" and \"url\"")
		}
		card.SupportedInterfaces = []*a2a.AgentInterface{{URL: seed.URL, ProtocolBinding: a2a.TransportProtocolJSONRPC, ProtocolVersion: a2av0.Version}}
	}
	// Only interfaces fangd may call and can speak are kept.
	var kept []*a2a.AgentInterface
	var refused []string
	for _, in := range card.SupportedInterfaces {
		if in == nil || in.URL == "" {
			continue
		}
		if in.ProtocolBinding != a2a.TransportProtocolJSONRPC && in.ProtocolBinding != a2a.TransportProtocolHTTPJSON {
			continue
		}
		if _, err := s.guard.Check(ctx, in.URL); err != nil {
			if neterr.Network(err) && !ssrf.IsBlocked(err) {
				// Not a refusal: a name that does not resolve now may
				// later, and every call dials through the guard again.
				s.log.Warn().Str("endpoint", in.URL).Str("problem", err.Error()).Msg("a2a: card endpoint does not resolve now")
			} else {
				refused = append(refused, in.URL+": "+err.Error())
				continue
			}
		}
		if in.ProtocolVersion == "" {
			in.ProtocolVersion = a2av0.Version
		}
		kept = append(kept, in)
	}
	if len(kept) == 0 {
		if len(refused) > 0 {
			return nil, kernel.Errorf(kernel.KindInvalid, "a2a_ssrf_blocked", "every endpoint of the card is refused: %s", strings.Join(refused, "; "))
		}
		return nil, errors.New("card offers no JSON-RPC or HTTP+JSON interface fangd can use")
	}
	card.SupportedInterfaces = kept
	return card, nil
}

// discoverStatic discovers [[a2a.external_agents]] in the background,
// retrying with backoff: a peer that starts later is picked up.
func (s *Service) discoverStatic(list []StaticAgent) {
	for _, sa := range list {
		go func() {
			for attempt := 1; attempt <= 10; attempt++ {
				ctx, cancel := context.WithTimeout(context.Background(), s.opts.DiscoveryTimeout*3)
				a, _, err := s.Discover(ctx, sa.URL, []byte(sa.Token))
				cancel()
				if err == nil {
					s.log.Info().Str("agent", a.Name).Str("id", a.ID).Str("url", a.URL).Msg("a2a: configured external agent discovered")
					return
				}
				s.log.Warn().Err(err).Str("name", sa.Name).Str("url", sa.URL).Int("attempt", attempt).Msg("a2a: configured external agent not discovered yet")
				time.Sleep(s.opts.RetryBackoff.Jittered(attempt))
			}
		}()
	}
}

// The supervisor's side of the registry.

func (s *supervisor) loadAgents() error {
	s.agents = map[string]ExternalAgent{}
	_, err := s.ext.EachOrQuarantine(func(id string, a ExternalAgent) bool {
		s.agents[id] = a
		return true
	})
	return err
}

func (s *supervisor) putAgent(c actor.Context, m *putAgent) {
	defer store.Wipe(m.token)
	a := m.agent
	now := time.Now().UTC()
	prev, existed := s.agents[a.ID]
	a.DiscoveredAt, a.UpdatedAt = now, now
	if existed {
		a.DiscoveredAt = prev.DiscoveredAt
		a.HasToken = prev.HasToken
	}
	if len(m.token) > 0 {
		if s.svc.vault == nil {
			c.Respond(kernel.Errorf(kernel.KindUnsupported, "no_vault", "tokens need the vault, which is not configured"))
			return
		}
		if err := s.svc.vault.Put(agentTokenName(a.ID), m.token); err != nil {
			c.Respond(err)
			return
		}
		m.token = nil // Put wiped it
		a.HasToken = true
	}
	if err := s.ext.Put(a.ID, a); err != nil {
		c.Respond(err)
		return
	}
	s.agents[a.ID] = a
	c.Respond(&putAgentReply{Agent: a, Created: !existed})
}

func (s *supervisor) deleteAgent(c actor.Context, m *deleteAgent) {
	if _, ok := s.agents[m.id]; !ok {
		c.Respond(errAgentNotFound(m.id))
		return
	}
	if err := s.ext.Delete(m.id); err != nil {
		c.Respond(err)
		return
	}
	if s.svc.vault != nil {
		_ = s.svc.vault.Delete(agentTokenName(m.id))
	}
	delete(s.agents, m.id)
	c.Respond(&ack{})
}

// ExternalAgents lists the discovered agents (without raw cards).
func (s *Service) ExternalAgents(ctx context.Context) ([]ExternalAgent, error) {
	all, err := kernel.Ask[[]ExternalAgent](ctx, s.k, s.sup, &listAgents{})
	if err != nil {
		return nil, err
	}
	for i := range all {
		all[i] = all[i].Summary()
	}
	return all, nil
}

// ExternalAgent returns one discovered agent, by id, or by name when no id
// matches.
func (s *Service) ExternalAgent(ctx context.Context, ref string) (ExternalAgent, error) {
	a, err := kernel.Ask[*ExternalAgent](ctx, s.k, s.sup, &getAgent{id: ref})
	if err == nil {
		return *a, nil
	}
	all, lerr := kernel.Ask[[]ExternalAgent](ctx, s.k, s.sup, &listAgents{})
	if lerr != nil {
		return ExternalAgent{}, err
	}
	for _, x := range all {
		if strings.EqualFold(x.Name, ref) {
			return x, nil
		}
	}
	return ExternalAgent{}, err
}

// DeleteExternalAgent forgets a discovered agent and its token.
func (s *Service) DeleteExternalAgent(ctx context.Context, id string) error {
	_, err := kernel.Ask[*ack](ctx, s.k, s.sup, &deleteAgent{id: id})
	return err
}
