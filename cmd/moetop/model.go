package main

import (
	"errors"
	"fmt"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/presets"
	"github.com/moetop/moetop/profiler"
)

// fromPreset starts a layer from a published model's: its shapes, gated
// experts, shared experts and router. Flags given beside --model override
// these fields afterwards; tokens, dtype and routing stay the run's.
func fromPreset(c profiler.Config, name string) (profiler.Config, error) {
	p, err := presets.Lookup(name)
	if errors.Is(err, presets.ErrUnknown) {
		return c, usagef("%v; moetop models lists them", err)
	}
	if err != nil {
		return c, err
	}
	c.Model = p.Name
	c.Hidden, c.FFN, c.Experts, c.TopK = p.Hidden, p.FFN, p.Experts, p.TopK
	if c.Act, err = kernels.ParseActivation(p.Act); err != nil {
		return c, fmt.Errorf("preset %s: %w", p.Name, err)
	}
	c.SharedExperts, c.SharedFFN = p.SharedExperts, 0
	if p.SharedExperts > 0 {
		c.SharedFFN = p.SharedFFN / p.SharedExperts // the preset counts their total width
	}
	c.Groups, c.TopKGroups, c.RoutedScale = 0, 0, 0
	switch p.Router.Kind {
	case presets.SigmoidGrouped:
		c.Router = kernels.SigmoidGrouped
		c.Groups, c.TopKGroups = p.Router.Groups, p.Router.TopKGroups
	case presets.Softmax:
		c.Router = kernels.Softmax
		if !p.Router.NormTopK {
			c.Router = kernels.SoftmaxNoNorm
		}
	default: // Llama 4's top-1 sigmoid: with k = 1 a softmax picks the same expert
		c.Router = kernels.Softmax
	}
	if p.Router.ScalingFactor != 0 && p.Router.ScalingFactor != 1 {
		c.RoutedScale = p.Router.ScalingFactor
	}
	return c, nil
}

// presetNotes says what of a --model moetop runs differently, for the
// header, the log and stderr.
func presetNotes(c profiler.Config) (weights string, notes []string) {
	p, err := presets.Lookup(c.Model)
	if err != nil {
		return "", nil
	}
	if p.Weights != c.DType.String() {
		weights = p.Weights
		notes = append(notes, fmt.Sprintf("%s publishes its experts' weights as %s; moetop runs them in %s, so memory and time are %s's",
			p.Name, p.Weights, c.DType, c.DType))
	}
	if p.Router.Kind == presets.SigmoidTop1 {
		notes = append(notes, p.Name+"'s router (the sigmoid of the top-1 logit) runs as softmax top-1: the same expert, another weight")
	}
	if p.Differs != "" {
		notes = append(notes, "not modelled: "+p.Differs)
	}
	return weights, notes
}
