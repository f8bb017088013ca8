package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"
)

// A minimal MQTT 3.1.1 client over a raw socket, for the benchmark only:
// CONNECT, SUBSCRIBE (one filter), PUBLISH at QoS 0 and 1 (with its
// PUBACK), DISCONNECT. It has no reconnect, no keep-alive pings (the
// keep-alive is 0) and no retries; what it is for is to learn whether
// paho.mqtt.golang is the ceiling of the bare subscriber, and to offer
// load at the lowest CPU cost per message.

const (
	mqttConnect    = 1
	mqttConnack    = 2
	mqttPublish    = 3
	mqttPuback     = 4
	mqttSubscribe  = 8
	mqttSuback     = 9
	mqttPingreq    = 12
	mqttPingresp   = 13
	mqttDisconnect = 14
)

type rawConn struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

// brokerAddr turns tcp://host:port into host:port.
func brokerAddr(broker string) string { return strings.TrimPrefix(broker, "tcp://") }

// rawDial connects and sends CONNECT (keep-alive 0: the broker never
// expects a ping), waiting for a CONNACK that accepts.
func rawDial(broker, id string, clean bool) (*rawConn, error) {
	c, err := net.DialTimeout("tcp", brokerAddr(broker), 5*time.Second)
	if err != nil {
		return nil, err
	}
	rc := &rawConn{c: c, r: bufio.NewReaderSize(c, 256<<10), w: bufio.NewWriterSize(c, 64<<10)}
	var v []byte
	v = appendString(v, "MQTT")
	v = append(v, 4) // protocol level 3.1.1
	flags := byte(0)
	if clean {
		flags |= 2
	}
	v = append(v, flags, 0, 0) // keep-alive 0
	v = appendString(v, id)
	rc.w.Write(appendHeader(nil, mqttConnect<<4, len(v)))
	rc.w.Write(v)
	if err := rc.w.Flush(); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, body, err := rc.readPacket(nil)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("connack: %w", err)
	}
	if typ>>4 != mqttConnack || len(body) != 2 || body[1] != 0 {
		c.Close()
		return nil, fmt.Errorf("connect refused: packet %#x %v", typ, body)
	}
	return rc, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// appendHeader appends a fixed header: the first byte and the remaining
// length in MQTT's variable-length encoding.
func appendHeader(b []byte, first byte, n int) []byte {
	b = append(b, first)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// readPacket reads one packet, its body into buf (grown as needed).
func (rc *rawConn) readPacket(buf []byte) (first byte, body []byte, err error) {
	first, err = rc.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		d, err := rc.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mul
		if d&0x80 == 0 {
			break
		}
		if mul *= 128; i == 3 {
			return 0, nil, errors.New("malformed remaining length")
		}
	}
	if cap(buf) < n {
		buf = make([]byte, n, max(n, 2*cap(buf)))
	}
	body = buf[:n]
	_, err = io.ReadFull(rc.r, body)
	return first, body, err
}

// subscribe sends SUBSCRIBE for filter at qos; the SUBACK is read by
// whoever reads the connection (the reader loop).
func (rc *rawConn) subscribe(filter string, qos byte) error {
	var v []byte
	v = binary.BigEndian.AppendUint16(v, 1) // packet id
	v = appendString(v, filter)
	v = append(v, qos)
	rc.w.Write(appendHeader(nil, mqttSubscribe<<4|2, len(v)))
	rc.w.Write(v)
	return rc.w.Flush()
}

// appendPublish appends one PUBLISH packet (id is ignored at QoS 0).
func appendPublish(b []byte, topic string, payload []byte, qos byte, id uint16) []byte {
	n := 2 + len(topic) + len(payload)
	if qos > 0 {
		n += 2
	}
	b = appendHeader(b, mqttPublish<<4|qos<<1, n)
	b = appendString(b, topic)
	if qos > 0 {
		b = binary.BigEndian.AppendUint16(b, id)
	}
	return append(b, payload...)
}

func (rc *rawConn) disconnect() {
	rc.w.Write([]byte{mqttDisconnect << 4, 0})
	_ = rc.w.Flush()
	rc.c.Close()
}

// rawReader is the raw-socket reference subscriber: it reads PUBLISH
// packets, parses each payload's JSON exactly as the bare paho subscriber
// does, counts it, and at QoS 1 acknowledges on receipt (PUBACKs are
// flushed whenever the read buffer runs dry, so a backlog is acknowledged
// in batches).
type rawReader struct {
	rc         *rawConn
	n          atomic.Int64
	subscribed chan struct{}
}

func newRawReader(broker, id string, qos byte, clean bool) (*rawReader, error) {
	rc, err := rawDial(broker, id, clean)
	if err != nil {
		return nil, err
	}
	rr := &rawReader{rc: rc, subscribed: make(chan struct{})}
	if err := rc.subscribe("fleet/+/telemetry", qos); err != nil {
		rc.c.Close()
		return nil, err
	}
	return rr, nil
}

// run reads until the connection closes.
func (rr *rawReader) run() error {
	rc := rr.rc
	var buf []byte
	var ack [4]byte
	ack[0], ack[1] = mqttPuback<<4, 2
	pending := false
	for {
		if pending && rc.r.Buffered() == 0 {
			if err := rc.w.Flush(); err != nil {
				return err
			}
			pending = false
		}
		first, body, err := rc.readPacket(buf)
		if err != nil {
			return err
		}
		buf = body
		switch first >> 4 {
		case mqttSuback:
			close(rr.subscribed)
		case mqttPublish:
			qos := (first >> 1) & 3
			if len(body) < 2 {
				return errors.New("short PUBLISH")
			}
			tl := int(binary.BigEndian.Uint16(body))
			p := body[2+tl:]
			if qos > 0 {
				copy(ack[2:], p[:2])
				p = p[2:]
				rc.w.Write(ack[:])
				pending = true
			}
			var v struct {
				Temp float64 `json:"temp"`
				Hum  float64 `json:"hum"`
			}
			if json.Unmarshal(p, &v) == nil {
				rr.n.Add(1)
			}
		}
	}
}
