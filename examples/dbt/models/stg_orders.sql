select id as order_id, customer, amount, ordered_at
from {{ ref('raw_orders') }}
