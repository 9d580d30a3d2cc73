package tui

// split shares a grid of total rows between the top band (expert load,
// kernel time) and the bottom band (GPU, memory), given what each needs to
// show its essentials and wants to show everything at a chart's nominal
// height. Rows go, in order: to both bands' needs; to the bottom's wants
// (the memory table's header, the OOM details: text before charts); to the
// top's wants; and what is left two to the top for each one to the
// bottom, where the panels stretch their charts into them. When even the
// needs do not fit, the bands share the rows in proportion to them.
func split(total, topNeed, topWant, botNeed, botWant int) (top, bot int) {
	total = max(0, total)
	topNeed, botNeed = max(1, topNeed), max(1, botNeed)
	topWant, botWant = max(topNeed, topWant), max(botNeed, botWant)
	if topNeed+botNeed >= total {
		top = total * topNeed / (topNeed + botNeed)
		return top, total - top
	}
	top, bot = topNeed, botNeed
	spare := total - top - bot
	give := func(n *int, want int) {
		g := min(spare, max(0, want-*n))
		*n += g
		spare -= g
	}
	give(&bot, botWant)
	give(&top, topWant)
	bot += spare / 3
	top = total - bot
	return top, bot
}
