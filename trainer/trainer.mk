# trainer/trainer.mk: what every part of the trainer shares: the compile rule for trainer/**/*.c and the
# variables the parts append to. The top-level Makefile includes this first, then one fragment per
# folder in dependency order (util, text, backend, model, train, dist, cli): each adds its objects to
# TRAINER_OBJS and its libraries to TRAINER_LIBS, which trainer/cli/cli.mk links into prefcap-dpo.
#
# Sources include each other by folder ("model/model.h"), with -Itrainer.

TRAINER_OBJS :=
TRAINER_LIBS :=
PC_CFLAGS     = $(CFLAGS_ALL) -Itrainer -fopenmp

$(BUILD)/trainer/%.o: trainer/%.c
	@mkdir -p $(dir $@)
	$(CC) $(PC_CFLAGS) -MMD -MP -c $< -o $@
