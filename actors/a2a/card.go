package a2a

import (
	"bytes"
	"context"
	"encoding/json"
	"sort"
	"strings"

	"github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/a2aproject/a2a-go/v2/a2acompat/a2av0"
	"github.com/a2aproject/a2a-go/v2/a2asrv"
)

// Agent cards. fangd publishes one card for the whole daemon (its
// endpoint routes a message to an agent named in the message, or to the
// default agent) and one per local agent (its endpoint is that agent).
// Each card lists a JSON-RPC interface for protocol 1.0 and one for 0.3 at
// the same URL: the endpoint tells the versions apart by method name. The
// JSON is the SDK's union of the 1.0 and 0.3 card formats, so clients of
// either version read it.

// Paths of the protocol endpoints under the base URL.
const (
	SharedPath    = "/a2a"
	perAgentPath  = "/a2a/agents/"
	inputModeText = "text/plain"
	inputModeJSON = "application/json"
)

// AgentPath is the JSON-RPC endpoint of one local agent.
func AgentPath(agentID string) string { return perAgentPath + agentID }

func (s *Service) baseCard(name, description, endpoint string, skills []a2a.AgentSkill) *a2a.AgentCard {
	url := s.BaseURL() + endpoint
	return &a2a.AgentCard{
		Name:        name,
		Description: description,
		Version:     s.opts.Version,
		SupportedInterfaces: []*a2a.AgentInterface{
			{URL: url, ProtocolBinding: a2a.TransportProtocolJSONRPC, ProtocolVersion: a2a.Version},
			{URL: url, ProtocolBinding: a2a.TransportProtocolJSONRPC, ProtocolVersion: a2av0.Version},
		},
		Capabilities: a2a.AgentCapabilities{
			Streaming:         s.opts.Streaming,
			PushNotifications: s.pusher != nil,
		},
		DefaultInputModes:  []string{inputModeText, inputModeJSON},
		DefaultOutputModes: []string{inputModeText},
		Skills:             skills,
		SecuritySchemes: a2a.NamedSecuritySchemes{
			"bearer": a2a.HTTPAuthSecurityScheme{Scheme: "Bearer",
				Description: "the daemon's API key, or a per-peer token from [[a2a.peers]], as Authorization: Bearer <token>"},
			"apiKey": a2a.APIKeySecurityScheme{Location: a2a.APIKeySecuritySchemeLocationHeader, Name: "X-API-Key",
				Description: "the daemon's API key or a per-peer token in the X-API-Key header"},
		},
		SecurityRequirements: a2a.SecurityRequirementsOptions{{"bearer": {}}, {"apiKey": {}}},
	}
}

// agentSkills are one skill per local agent, for the daemon's card.
func agentSkills(agents []Agent) []a2a.AgentSkill {
	skills := make([]a2a.AgentSkill, 0, len(agents))
	for _, a := range agents {
		desc := a.Description
		if desc == "" {
			desc = "Chat with the agent " + a.Name
		}
		skills = append(skills, a2a.AgentSkill{
			ID: a.ID, Name: a.Name, Description: desc, Tags: append([]string{"agent"}, a.Tags...),
			Examples: []string{`{"metadata": {"agent_id": "` + a.ID + `"}}`},
		})
	}
	return skills
}

// toolSkills are an agent's own skills: chatting with it, and each tool it
// may use (LibreFang's per-agent card lists tools the same way).
func toolSkills(a Agent) []a2a.AgentSkill {
	desc := a.Description
	if desc == "" {
		desc = "General-purpose chat with " + a.Name
	}
	skills := []a2a.AgentSkill{{ID: "chat", Name: "Chat", Description: desc, Tags: nonNil(a.Tags)}}
	for _, t := range a.Tools {
		skills = append(skills, a2a.AgentSkill{ID: t, Name: strings.ReplaceAll(t, "_", " "),
			Description: "Can use the " + t + " tool", Tags: []string{"tool"}})
	}
	return skills
}

func (s *Service) localAgents(ctx context.Context) ([]Agent, error) {
	all, err := s.agents.List(ctx)
	if err != nil {
		return nil, err
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	return all, nil
}

// Card is the A2A card of the daemon (agentID empty) or of one local agent.
func (s *Service) Card(ctx context.Context, agentID string) (*a2a.AgentCard, error) {
	if agentID == "" {
		all, err := s.localAgents(ctx)
		if err != nil {
			return nil, err
		}
		return s.baseCard(s.opts.Name, s.opts.Description, SharedPath, agentSkills(all)), nil
	}
	a, err := s.agents.Resolve(ctx, agentID)
	if err != nil {
		return nil, err
	}
	return s.agentCard(a), nil
}

func (s *Service) agentCard(a Agent) *a2a.AgentCard {
	desc := a.Description
	if desc == "" {
		desc = "fangd agent " + a.Name
	}
	return s.baseCard(a.Name, desc, AgentPath(a.ID), toolSkills(a))
}

// CardJSON is Card as served at /.well-known/agent-card.json: the union of
// the 1.0 and 0.3 formats.
func (s *Service) CardJSON(ctx context.Context, agentID string) ([]byte, error) {
	card, err := s.Card(ctx, agentID)
	if err != nil {
		return nil, err
	}
	return unionJSON(ctx, card)
}

func unionJSON(ctx context.Context, card *a2a.AgentCard) ([]byte, error) {
	p := a2av0.NewStaticAgentCardProducer(card)
	jp, ok := p.(a2asrv.AgentCardJSONProducer)
	if !ok {
		return json.Marshal(card)
	}
	raw, err := jp.CardJSON(ctx)
	if err != nil || len(card.SecuritySchemes) == 0 {
		return raw, err
	}
	// The SDK writes security schemes only in the 0.3 form, which its own
	// 1.0 parser (and other 1.0 clients) refuse; each scheme gets its 1.0
	// member ("httpAuthSecurityScheme", ...) beside the 0.3 fields, so both
	// versions read the card.
	var union map[string]json.RawMessage
	if err := json.Unmarshal(raw, &union); err != nil {
		return nil, err
	}
	v1raw, err := json.Marshal(card.SecuritySchemes)
	if err != nil {
		return nil, err
	}
	var v0, v1 map[string]map[string]json.RawMessage
	if err := json.Unmarshal(union["securitySchemes"], &v0); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(v1raw, &v1); err != nil {
		return nil, err
	}
	for name, members := range v1 {
		if v0[name] == nil {
			v0[name] = map[string]json.RawMessage{}
		}
		for k, v := range members {
			v0[name][k] = v
		}
	}
	if union["securitySchemes"], err = marshalPlain(v0); err != nil {
		return nil, err
	}
	return marshalPlain(union)
}

// marshalPlain is json.Marshal without HTML escaping ("<" stays "<").
func marshalPlain(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// LocalCards are the cards of every local agent (GET /a2a/agents).
func (s *Service) LocalCards(ctx context.Context) ([]json.RawMessage, error) {
	all, err := s.localAgents(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(all))
	for _, a := range all {
		raw, err := unionJSON(ctx, s.agentCard(a))
		if err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	return out, nil
}

// seedCard is the seed's card shape (GET /.well-known/agent.json), with the
// 0.3 fields that let a 0.3 client use it too.
type seedCard struct {
	Name               string           `json:"name"`
	Description        string           `json:"description"`
	URL                string           `json:"url"`
	Version            string           `json:"version"`
	ProtocolVersion    string           `json:"protocolVersion"`
	PreferredTransport string           `json:"preferredTransport"`
	Capabilities       seedCapabilities `json:"capabilities"`
	Skills             []seedSkill      `json:"skills"`
	DefaultInputModes  []string         `json:"defaultInputModes"`
	DefaultOutputModes []string         `json:"defaultOutputModes"`
}

type seedCapabilities struct {
	Streaming              bool `json:"streaming"`
	PushNotifications      bool `json:"pushNotifications"`
	StateTransitionHistory bool `json:"stateTransitionHistory"`
}

type seedSkill struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Tags        []string `json:"tags"`
	Examples    []string `json:"examples,omitempty"`
}

// SeedCardJSON is the daemon's card in the seed's shape.
func (s *Service) SeedCardJSON(ctx context.Context) ([]byte, error) {
	all, err := s.localAgents(ctx)
	if err != nil {
		return nil, err
	}
	c := seedCard{
		Name: s.opts.Name, Description: s.opts.Description, URL: s.BaseURL() + SharedPath,
		Version: s.opts.Version, ProtocolVersion: string(a2av0.Version), PreferredTransport: string(a2a.TransportProtocolJSONRPC),
		Capabilities:       seedCapabilities{Streaming: s.opts.Streaming, PushNotifications: s.pusher != nil, StateTransitionHistory: true},
		Skills:             []seedSkill{},
		DefaultInputModes:  []string{inputModeText, inputModeJSON},
		DefaultOutputModes: []string{inputModeText},
	}
	for _, sk := range agentSkills(all) {
		c.Skills = append(c.Skills, seedSkill{ID: sk.ID, Name: sk.Name, Description: sk.Description, Tags: sk.Tags})
	}
	return json.Marshal(c)
}

// LocalAgent resolves a local agent by id or name.
func (s *Service) LocalAgent(ctx context.Context, ref string) (Agent, error) {
	return s.agents.Resolve(ctx, ref)
}
