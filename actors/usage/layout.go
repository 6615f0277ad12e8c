package usage

// This file is the storage key layout: which key holds what, and the
// helpers that build keys and write key/value pairs.

import (
	"encoding/binary"
	"fmt"

	"github.com/fangd/fangd/store"
)

// Storage layout. Roll-ups are absolute counters rewritten whenever an
// event changes them, in the same synced transaction as the event, so
// reading any period costs a few map lookups, never a scan of events.
//
//	usage/e/<unix nanos BE8>                    raw event (binary, see appendEventBinary; older ones JSON), deleted after retention
//	usage/h/<unix hour BE8>                     Counters per UTC hour
//	usage/d/<day BE4>                           Counters per UTC day (days since 1970-01-01)
//	usage/dm/<day BE4><provider>\x00<model>     Counters per day and model
//	usage/da/<day BE4><agent id>                Counters per day and agent
//	usage/m/<provider>\x00<model>               lifetime Counters per model
//	usage/a/<agent id>                          lifetime agentTotal
//	usage/du/<day BE4><user>                    Counters per day and user
//	usage/u/<user>                              lifetime Counters per user
//	usage/mp/<provider>\x00<model>              lifetime latency per model
//	usage/budget/global                         Limits
//	usage/budget/agent/<agent id>               AgentLimits
//	usage/budget/provider/<provider>            ProviderLimits
//	usage/budget/user/<user>                    UserLimits
//	usage/alert/<kind>|<scope>|<limit>|<window> alert already raised in that window
const (
	pEvent      = "usage/e/"
	pHour       = "usage/h/"
	pDay        = "usage/d/"
	pDayModel   = "usage/dm/"
	pDayAgent   = "usage/da/"
	pModel      = "usage/m/"
	pAgent      = "usage/a/"
	pDayUser    = "usage/du/"
	pUser       = "usage/u/"
	pModelPerf  = "usage/mp/"
	kBudget     = "usage/budget/global"
	pAgentLimit = "usage/budget/agent/"
	pProvLimit  = "usage/budget/provider/"
	pUserLimit  = "usage/budget/user/"
	pAlert      = "usage/alert/"
)

func be4(d int32) []byte { b := make([]byte, 4); binary.BigEndian.PutUint32(b, uint32(d)); return b }
func be8(v int64) []byte { b := make([]byte, 8); binary.BigEndian.PutUint64(b, uint64(v)); return b }

func eventKey(nanos int64) []byte { return append([]byte(pEvent), be8(nanos)...) }
func hourKey(h int64) []byte      { return append([]byte(pHour), be8(h)...) }
func dayKey(d int32) []byte       { return append([]byte(pDay), be4(d)...) }
func modelKeyBytes(k modelKey) []byte {
	return []byte(k.provider + "\x00" + k.model)
}
func dayModelKey(d int32, k modelKey) []byte {
	return append(append([]byte(pDayModel), be4(d)...), modelKeyBytes(k)...)
}
func dayAgentKey(d int32, agent string) []byte {
	return append(append([]byte(pDayAgent), be4(d)...), agent...)
}
func modelTotalKey(k modelKey) []byte { return append([]byte(pModel), modelKeyBytes(k)...) }
func agentTotalKey(a string) []byte   { return []byte(pAgent + a) }

func parseModelKey(b []byte) (modelKey, error) {
	for i, c := range b {
		if c == 0 {
			return modelKey{string(b[:i]), string(b[i+1:])}, nil
		}
	}
	return modelKey{}, fmt.Errorf("model roll-up key %q has no separator", b)
}

// dirtyKey names a stored roll-up an event changed. Keys are built as
// bytes only when a batch is flushed, so the per-event path allocates none.
type dirtyKey struct {
	kind byte // 'd' day, 'h' hour, 'M' day+model, 'A' day+agent, 'm' model, 'a' agent,
	// 'U' day+user, 'u' user, 'p' model latency, 'x' raw key in s1
	day  int32
	hour int64
	s1   string
	s2   string
}

// appendTo appends the stored key k names (the layout at the top).
func (k dirtyKey) appendTo(b []byte) []byte {
	switch k.kind {
	case 'd':
		return binary.BigEndian.AppendUint32(append(b, pDay...), uint32(k.day))
	case 'h':
		return binary.BigEndian.AppendUint64(append(b, pHour...), uint64(k.hour))
	case 'M':
		b = binary.BigEndian.AppendUint32(append(b, pDayModel...), uint32(k.day))
		return append(append(append(b, k.s1...), 0), k.s2...)
	case 'A':
		return append(binary.BigEndian.AppendUint32(append(b, pDayAgent...), uint32(k.day)), k.s1...)
	case 'm':
		return append(append(append(append(b, pModel...), k.s1...), 0), k.s2...)
	case 'a':
		return append(append(b, pAgent...), k.s1...)
	case 'U':
		return append(binary.BigEndian.AppendUint32(append(b, pDayUser...), uint32(k.day)), k.s1...)
	case 'u':
		return append(append(b, pUser...), k.s1...)
	case 'p':
		return append(append(append(append(b, pModelPerf...), k.s1...), 0), k.s2...)
	}
	return append(b, k.s1...)
}

// dirtySet collects the stored keys events changed, with the value to
// write (encoded when the batch is flushed; nil deletes).
type dirtySet map[dirtyKey]any

type kv struct {
	key, val []byte
	del      bool
}

// writeKVs stores pairs in one synced transaction.
func writeKVs(db *store.DB, pairs []kv) error {
	return db.Update(func(tx *store.Txn) error { return setKVs(tx, pairs) })
}

func setKVs(tx *store.Txn, pairs []kv) error {
	for _, p := range pairs {
		var err error
		if p.del {
			err = tx.Delete(p.key)
		} else {
			err = tx.Set(p.key, p.val)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
