package io.github.bigmodel.chatglm.chat;

/**
 * Model inputs for one prompt as THUDM's tokenizers return them for a batch of one without padding:
 * {@code input_ids}, {@code attention_mask} (all ones) and {@code position_ids} ({@code 0..n-1}).
 *
 * <pre>{@code
 * ChatInput in = glm3.buildChatInput("你好", List.of(), "user");
 * long[] shape = {1, in.inputIds().length};
 * }</pre>
 *
 * @param inputIds      token ids
 * @param attentionMask ones, one per id
 * @param positionIds   0..n-1
 */
public record ChatInput(int[] inputIds, int[] attentionMask, int[] positionIds) {

    /** Inputs for {@code ids} with the unpadded mask and positions. */
    public static ChatInput of(int[] ids) {
        int[] mask = new int[ids.length];
        int[] positions = new int[ids.length];
        for (int i = 0; i < ids.length; i++) {
            mask[i] = 1;
            positions[i] = i;
        }
        return new ChatInput(ids.clone(), mask, positions);
    }

    /** Number of tokens. */
    public int length() {
        return inputIds.length;
    }
}
