package stream

import "fmt"

// Layer is the MoE layer a run profiles and how it is routed, as a log
// records it. The JSON names are those of moetop/1's "config".
type Layer struct {
	Tokens  int    `json:"tokens"`
	Hidden  int    `json:"hidden"`
	FFN     int    `json:"ffn"`
	Experts int    `json:"experts"`
	TopK    int    `json:"top_k"`
	DType   string `json:"dtype"`
	Act     string `json:"activation"`
	Routing string `json:"routing"`
	Seed    uint64 `json:"seed"`
	// CapacityFactor > 0 makes a padding backend drop rows over
	// ceil(CapacityFactor·rows/experts) per expert.
	CapacityFactor float64 `json:"capacity_factor,omitempty"`
	// Fields moetop/2 added; absent in moetop/1 logs.
	SharedExperts int    `json:"shared_experts,omitempty"`
	SharedFFN     int    `json:"shared_ffn,omitempty"`
	Router        string `json:"router,omitempty"`
	Model         string `json:"model,omitempty"`
	// The grouped sigmoid router's groups and kept groups, and the routed
	// weights' scale (0: none, 1).
	RouterGroups     int     `json:"router_groups,omitempty"`
	RouterTopKGroups int     `json:"router_topk_groups,omitempty"`
	RoutedScale      float64 `json:"routed_scale,omitempty"`
}

// String is the shape as a person reads it.
func (l Layer) String() string {
	return fmt.Sprintf("T=%d H=%d F=%d E=%d k=%d %s %s", l.Tokens, l.Hidden, l.FFN, l.Experts, l.TopK, l.DType, l.Act)
}
