package rules

import "strings"

// index finds the rules whose topic filter matches a topic in time
// proportional to the topic's depth, not to the number of rules: a trie over
// filter levels where '+' and '#' are children of their own.
type index struct {
	root node
}

type node struct {
	children map[string]*node
	plus     *node
	hash     []*Rule // rules whose filter ends in '#' at this level
	rules    []*Rule // rules whose filter ends exactly here
}

func (ix *index) add(filter string, r *Rule) {
	n := &ix.root
	for level := range strings.SplitSeq(filter, "/") {
		switch level {
		case "#":
			n.hash = append(n.hash, r)
			return
		case "+":
			if n.plus == nil {
				n.plus = &node{}
			}
			n = n.plus
		default:
			if n.children == nil {
				n.children = map[string]*node{}
			}
			child := n.children[level]
			if child == nil {
				child = &node{}
				n.children[level] = child
			}
			n = child
		}
	}
	n.rules = append(n.rules, r)
}

// match appends to dst every rule whose filter matches topic.
func (ix *index) match(topic string, dst []*Rule) []*Rule {
	// [MQTT-4.7.2-1]: filters starting with a wildcard do not match
	// topics starting with '$' (broker internals such as $SYS).
	system := strings.HasPrefix(topic, "$")
	return ix.root.match(topic, true, system, dst)
}

func (n *node) match(rest string, first, system bool, dst []*Rule) []*Rule {
	wild := !(first && system)
	if wild {
		dst = append(dst, n.hash...) // '#' also matches the parent level [MQTT-4.7.1-2]
	}
	level, next, more := strings.Cut(rest, "/")
	if child := n.children[level]; child != nil {
		dst = child.step(next, more, system, dst)
	}
	if wild && n.plus != nil {
		dst = n.plus.step(next, more, system, dst)
	}
	return dst
}

// step continues below a node that consumed one level.
func (n *node) step(next string, more, system bool, dst []*Rule) []*Rule {
	if more {
		return n.match(next, false, system, dst)
	}
	dst = append(dst, n.rules...)
	return append(dst, n.hash...)
}
