package tables

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Address families of Event.Family (linux/socket.h).
const (
	familyInet  = 2
	familyInet6 = 10
)

// eventSize is the size of struct event, the ring buffer's record.
var eventSize = binary.Size(Event{})

// DecodeEvent decodes one ring buffer record. A record shorter than struct event is an
// error; bytes after it are ignored (the ring buffer rounds records up to 8 bytes).
func DecodeEvent(raw []byte) (Event, error) {
	var ev Event
	if len(raw) < eventSize {
		return ev, fmt.Errorf("event of %d bytes, want %d", len(raw), eventSize)
	}
	_, err := binary.Decode(raw, binary.LittleEndian, &ev)
	return ev, err
}

// PathText is the resolved path the event carries: Path up to its first NUL. The
// programs end the path with a NUL within the buffer, so a longer one is cut (PathLen
// says how long it was); a record without a NUL gives the whole buffer.
func (e *Event) PathText() string {
	if n := bytes.IndexByte(e.Path[:], 0); n >= 0 {
		return string(e.Path[:n])
	}
	return string(e.Path[:])
}

// Address is the destination of a connect or send, when the event has one (an inet or
// inet6 family); the zero AddrPort otherwise.
func (e *Event) Address() netip.AddrPort {
	switch e.Family {
	case familyInet:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(e.Addr[:4])), e.Port)
	case familyInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(e.Addr), e.Port)
	}
	return netip.AddrPort{}
}
